"""The database layer: the SQLite engine, planner statistics, the Piccolo speed-up."""

from __future__ import annotations


async def test_embedded_database_gets_planner_statistics_once(db: None) -> None:
    from core.db import get_engine, refresh_statistics

    if get_engine().engine_type != "sqlite":
        assert await refresh_statistics() is False  # autovacuum's job on PostgreSQL
        return
    await get_engine().run_ddl("DROP TABLE IF EXISTS sqlite_stat1")
    assert await refresh_statistics(only_if_missing=True) is True
    assert await refresh_statistics(only_if_missing=True) is False
    assert await refresh_statistics() is True


def test_the_piccolo_join_speed_up_answers_as_dir_does() -> None:
    from core.db import _AttributeNames
    from core.tables import Deal, Session

    for column in (Deal.client, Deal.responsible, Session.user, Deal.client.responsible):
        names = {*dir(column), "name", "nope", "_meta", "full_name", "copy", "zzz"}
        for name in names:
            assert (name in _AttributeNames(column)) == (name in dir(column)), name
    assert Deal.client.name._meta.call_chain  # joins still resolve


async def test_sqlite_queries_share_one_connection_and_notice_a_replaced_file(db: None) -> None:
    from core.db import ReusingSQLiteEngine, get_engine
    from core.tables import Team

    engine = get_engine()
    if not isinstance(engine, ReusingSQLiteEngine):
        return  # PostgreSQL: the pool's business
    await Team.select().run()
    first = await engine._shared_connections()
    await Team.insert(Team(name="Before the copy"))
    assert await engine._shared_connections() is first
    # A restore puts another file in place: the next query must not read the old one.
    from pathlib import Path

    from core.backup.database import sqlite_copy, sqlite_replace

    live = Path(engine.path)
    copy = live.with_name(live.name + ".copy")
    sqlite_copy(live, copy)
    await Team.insert(Team(name="After the copy"))
    assert "After the copy" in {t["name"] for t in await Team.select(Team.name)}
    sqlite_replace(live, copy)
    names = {t["name"] for t in await Team.select(Team.name)}
    assert "Before the copy" in names and "After the copy" not in names
    assert await engine._shared_connections() is not first


async def test_sqlite_reads_run_on_the_loop_and_see_every_committed_write(db: None) -> None:
    import threading

    from core.db import ReusingSQLiteEngine, get_engine
    from core.services.common import write
    from core.tables import Team

    engine = get_engine()
    if not isinstance(engine, ReusingSQLiteEngine):
        return
    shared = await engine._shared_connections()
    loop_thread = threading.get_ident()
    threads: list[int] = []
    shared.reader.set_trace_callback(lambda _sql: threads.append(threading.get_ident()))
    try:
        await Team.insert(Team(name="Written on the connection's thread"))
        assert threads == []  # the write did not touch the reader
        rows = await Team.select(Team.name).where(Team.name.like("Written%"))
        assert rows == [{"name": "Written on the connection's thread"}]
        assert threads and set(threads) == {loop_thread}
        async with write():  # a transaction reads its own writes, on its own connection
            await Team.insert(Team(name="Inside a transaction"))
            assert await Team.exists().where(Team.name == "Inside a transaction")
        assert await Team.count().where(Team.name == "Inside a transaction") == 1
    finally:
        shared.reader.set_trace_callback(None)
