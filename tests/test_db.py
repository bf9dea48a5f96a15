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


def test_raw_placeholders_become_the_drivers_own() -> None:
    from core.db import _native_sql

    sql = "SELECT * FROM t WHERE a = {} AND b IN ({}, {})"
    assert _native_sql(sql, "sqlite") == "SELECT * FROM t WHERE a = ? AND b IN (?, ?)"
    assert _native_sql(sql, "postgres") == "SELECT * FROM t WHERE a = $1 AND b IN ($2, $3)"


async def test_fetch_runs_inside_the_current_transaction(db: None) -> None:
    import pytest

    from core.db import fetch
    from core.services.common import write
    from core.tables import Team

    with pytest.raises(RuntimeError):
        async with write():
            await fetch("INSERT INTO core_team (name) VALUES ({})", "Rolled back")
            seen = await fetch("SELECT name FROM core_team WHERE name = {}", "Rolled back")
            assert seen == [{"name": "Rolled back"}]  # its own uncommitted write
            raise RuntimeError("undo")
    assert not await Team.exists().where(Team.name == "Rolled back")
    await fetch("INSERT INTO core_team (name) VALUES ({})", "Kept")
    rows = await fetch("SELECT id, name FROM core_team WHERE name = {}", "Kept")
    assert rows[0]["name"] == "Kept" and isinstance(rows[0]["id"], int)


def test_sqlite_converters_read_what_piccolo_wrote() -> None:
    from datetime import UTC, datetime

    from core.db import _integer_out, _timestamptz_out

    assert _integer_out(b"42") == 42 and _integer_out(b"-7") == -7
    assert _integer_out(b"3.0") == 3  # a REAL that slipped into an INTEGER column
    moment = datetime(2026, 11, 23, 6, 30, 30, 123456, tzinfo=UTC)
    assert _timestamptz_out(str(moment).encode()) == moment
    assert _timestamptz_out(b"2026-11-23 06:30:30") == moment.replace(microsecond=0)


async def test_a_long_run_of_sqlite_reads_lets_the_event_loop_breathe(db: None) -> None:
    """An export pages through every client with reads that never suspend: other
    requests must still get the loop in between."""
    import asyncio
    import time

    from core.db import READ_SLICE, ReusingSQLiteEngine, get_engine
    from core.tables import Team

    if not isinstance(get_engine(), ReusingSQLiteEngine):
        return
    other_request = asyncio.Event()

    async def other() -> None:
        other_request.set()

    waiting = asyncio.create_task(other())
    started = time.monotonic()
    while not other_request.is_set() and time.monotonic() - started < 10 * READ_SLICE:
        await Team.select(Team.id)
        time.sleep(READ_SLICE / 10)  # work between the reads that never awaits
    await waiting
    assert time.monotonic() - started < 3 * READ_SLICE, "the loop was held for the whole run"
