"""Database engine, the Piccolo app registry and migrations."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
import weakref
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

import aiosqlite
from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.apps.migrations.commands.base import BaseMigrationManager
from piccolo.apps.migrations.commands.forwards import ForwardsMigrationManager
from piccolo.conf.apps import AppRegistry
from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine
from piccolo.engine.sqlite import SQLiteEngine, dict_factory

from core.runtime import get_runtime

CORE_APP = "core.piccolo_app"

logger = logging.getLogger(__name__)


def _integer_out(value: bytes) -> int:
    """SQLite's INTEGER values as int. Piccolo's converter decodes every one to text and
    goes through Decimal (a seventh of the embedded card's Python went to converting
    ids); int() reads the bytes directly. Decimal stays for a REAL that slipped in."""
    try:
        return int(value)
    except ValueError:
        return int(Decimal(value.decode()))


def _timestamptz_out(value: bytes) -> datetime:
    """Piccolo's conversion (stored ISO text, read as UTC) without its wrapper's checks."""
    return datetime.fromisoformat(value.decode()).replace(tzinfo=UTC)


# Piccolo registers its converters when its SQLite engine module is imported (above);
# these replace two of them for every connection of the process.
sqlite3.register_converter("INTEGER", _integer_out)
sqlite3.register_converter("TIMESTAMPTZ", _timestamptz_out)


READ_SLICE = 0.05
"""Seconds of reads run back to back on an event loop's thread (an export paging
through every client) after which the next read first lets the loop's other work run."""


class _SharedConnection:
    """One event loop's connections: ``reader`` answers plain SELECTs right on the loop's
    thread, ``connection`` (its own thread) takes every write."""

    __slots__ = ("connection", "file_id", "reader", "yielded_at")

    def __init__(
        self, connection: aiosqlite.Connection, reader: sqlite3.Connection, file_id: tuple[int, int]
    ) -> None:
        self.connection = connection
        self.reader = reader
        self.file_id = file_id
        self.yielded_at = time.monotonic()


def _file_id(path: str) -> tuple[int, int]:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return (0, 0)
    return (stat.st_dev, stat.st_ino)


def _is_read(query: str) -> bool:
    """A statement that cannot write: SQLite has no SELECT with side effects."""
    return query.lstrip()[:6].upper() == "SELECT"


class ReusingSQLiteEngine(SQLiteEngine):
    """Piccolo's SQLite engine, minus a new connection (and thread) for every query.

    Piccolo opens a connection per query outside a transaction: ~2 ms each, more than
    the queries themselves, and a page sends several. This engine keeps connections per
    event loop for those queries; transactions still get their own. A restore or
    rollback that puts another file in place is noticed by the file's identity.

    Reads outside a transaction run synchronously on the loop's thread. An indexed read
    takes tens of microseconds, and handing it to a connection thread and back cost
    more: the hand-offs and the GIL passing between the two threads held the embedded
    mode's card at ~210 requests/s with one core idle half the time (~270 without). In
    WAL mode a read never waits for a lock, so it cannot stall the loop behind a writer;
    a slow read stalls the loop as it would have stalled the one shared connection, and
    a long run of reads lets the loop breathe every `READ_SLICE`. Writes stay on the
    connection's thread: they may wait for the write lock, held perhaps by a
    transaction of this very loop.
    """

    def __init__(self, **kwargs: Any) -> None:
        if sqlite3.sqlite_version_info < (3, 35):  # RETURNING gives inserted ids
            raise RuntimeError(f"SQLite 3.35 or newer is needed, found {sqlite3.sqlite_version}")
        super().__init__(**kwargs)
        self._shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _SharedConnection]
        self._shared = weakref.WeakKeyDictionary()

    async def _shared_connections(self) -> _SharedConnection:
        loop = asyncio.get_running_loop()
        current = _file_id(self.path)
        shared = self._shared.get(loop)
        if shared is not None and shared.file_id == current:
            return shared
        if shared is not None:
            del self._shared[loop]
            await self._close(shared)
        connection = await self._open_shared()
        reader = sqlite3.connect(**self.connection_kwargs)
        reader.row_factory = dict_factory
        shared = self._shared[loop] = _SharedConnection(connection, reader, current)
        return shared

    @staticmethod
    async def _close(shared: _SharedConnection) -> None:
        shared.reader.close()
        await shared.connection.close()

    async def _open_shared(self) -> aiosqlite.Connection:
        pending = aiosqlite.connect(**self.connection_kwargs)
        # A daemon thread: a process that never closes this connection (a CLI command,
        # a job thread's loop) must still be able to exit.
        pending._thread.daemon = True
        connection = await pending
        connection.row_factory = dict_factory  # type: ignore[assignment]
        await connection.execute("PRAGMA foreign_keys = 1")
        return connection

    async def _run_in_new_connection(
        self,
        query: str,
        args: list[Any] | None = None,
        query_type: str = "generic",
        table: Any = None,
    ) -> Any:
        shared = await self._shared_connections()
        if _is_read(query):
            # A read does not suspend the coroutine, so a loop of reads with no other
            # await would keep every other request (and live stream) waiting.
            now = time.monotonic()
            if now - shared.yielded_at > READ_SLICE:
                shared.yielded_at = now
                await asyncio.sleep(0)
            return shared.reader.execute(query, args or []).fetchall()
        connection = shared.connection
        try:
            # One trip to the connection's thread (execute, fetch, close there), not three.
            return await connection.execute_fetchall(query, args or [])
        finally:
            # A write opened an implicit transaction: end it now, or it would hold
            # the database's one write lock for every other connection.
            if connection.in_transaction:
                await connection.commit()

    async def _run_in_existing_connection(
        self,
        connection: Any,
        query: str,
        args: list[Any] | None = None,
        query_type: str = "generic",
        table: Any = None,
    ) -> Any:
        # Piccolo repeats "PRAGMA foreign_keys" and the row factory before each statement
        # of a transaction; its get_connection has set both once for the connection.
        return await connection.execute_fetchall(query, args or [])

    async def close_shared_connections(self) -> None:
        """Close this event loop's connections (at shutdown, so the thread ends)."""
        shared = self._shared.pop(asyncio.get_running_loop(), None)
        if shared is not None:
            await self._close(shared)


@lru_cache(maxsize=4)
def _engine_for(database_url: str) -> Engine:
    if database_url.startswith("sqlite:///"):
        path = database_url.removeprefix("sqlite:///")
        # timeout: wait for the single SQLite writer instead of failing with "locked".
        return ReusingSQLiteEngine(path=path, timeout=30)
    return PostgresEngine(config={"dsn": database_url})


def get_engine() -> Engine:
    return _engine_for(get_runtime().settings.database_url)


@lru_cache(maxsize=1024)
def _native_sql(sql: str, engine_type: str) -> str:
    """Piccolo's ``{}`` placeholders as the driver's: ``?`` for SQLite, ``$n`` for asyncpg."""
    pieces = sql.split("{}")
    if engine_type == "sqlite":
        return "?".join(pieces)
    return pieces[0] + "".join(f"${n}{piece}" for n, piece in enumerate(pieces[1:], start=1))


async def fetch(sql: str, *args: Any) -> list[dict[str, Any]]:
    """The rows of a raw statement, as ``Table.raw`` gives them, without Piccolo's query
    building: for the statements every page runs (the session, the card's reads), that
    cost more Python than the statement cost the database.

    ``sql`` has ``{}`` placeholders, as ``Table.raw``; inside a transaction
    (`core.services.common.write`) the statement runs in it.
    """
    engine = get_engine()
    return await _run_native(engine, _native_sql(sql, engine.engine_type), list(args))


async def _run_native(engine: Engine, query: str, args: list[Any]) -> list[dict[str, Any]]:
    """One statement with the driver's placeholders (`bench.plans` records them here)."""
    transaction = engine.current_transaction.get()
    if isinstance(engine, ReusingSQLiteEngine):
        if transaction is not None:
            return await engine._run_in_existing_connection(transaction.connection, query, args)
        return await engine._run_in_new_connection(query, args)
    assert isinstance(engine, PostgresEngine)
    if transaction is not None:
        rows = await transaction.connection.fetch(query, *args)
    elif engine.pool:
        async with engine.pool.acquire() as connection:
            rows = await connection.fetch(query, *args)
    else:
        rows = await engine._run_in_new_connection(query, args)
    return [dict(row) for row in rows]


async def _keep_session(connection: Any) -> None:
    """Nothing to reset when a pooled connection goes back to the pool.

    asyncpg's default sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET
    ALL`` on every release, and Piccolo borrows a connection per query: one more round
    trip per query (8 % of a client card's time). Kartoteka leaves no session state on
    a pooled connection (no advisory locks, LISTEN on a connection of its own, ``SET
    LOCAL`` only); an open transaction is still rolled back by asyncpg itself.
    """


async def start_pool() -> bool:
    """Open the PostgreSQL connection pool of this process; False on SQLite."""
    engine = get_engine()
    if not isinstance(engine, PostgresEngine):
        return False
    await engine.start_connection_pool(reset=_keep_session)
    return True


def app_modules() -> list[str]:
    """Core first, then the enabled plugins' apps in dependency order."""
    modules = [CORE_APP]
    for module in get_runtime().plugins.collect("piccolo_apps"):
        if module not in modules:
            modules.append(module)
    return modules


def app_registry() -> AppRegistry:
    return AppRegistry(apps=app_modules())


def bind_tables() -> None:
    """Point every registered table at our engine (Piccolo would otherwise guess)."""
    from piccolo.apps.migrations.tables import Migration

    engine = get_engine()
    Migration._meta.db = engine  # Piccolo's bookkeeping of applied migrations
    for app_config in app_registry().app_configs.values():
        for table in app_config.table_classes:
            table._meta.db = engine


def prepare_sqlite(path: str) -> None:
    """WAL lets readers work while the one writer writes; it is a property of the file."""
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


class MigrationError(RuntimeError):
    pass


def sql_migration(
    migration_id: str,
    app_name: str,
    description: str,
    statements: list[str],
    *,
    postgres: list[str] | None = None,
    sqlite: list[str] | None = None,
) -> MigrationManager:
    """A migration of plain SQL statements (indexes Piccolo cannot declare, data fills);
    ``postgres`` and ``sqlite`` run after ``statements`` on that engine only.

    The engine is looked up when the migration runs: a Table class declared in the
    migration module would keep the engine of the first database the process saw.
    """
    manager = MigrationManager(
        migration_id=migration_id, app_name=app_name, description=description
    )

    async def run_statements() -> None:
        engine = get_engine()
        own = sqlite if engine.engine_type == "sqlite" else postgres
        for statement in [*statements, *(own or [])]:
            await engine.run_ddl(statement)

    manager.add_raw(run_statements)
    return manager


async def migrate(app_names: list[str] | None = None) -> list[str]:
    """Apply pending migrations of the core and enabled plugins; returns a log."""
    settings = get_runtime().settings
    if settings.is_sqlite:
        prepare_sqlite(str(settings.sqlite_path))
    bind_tables()
    from piccolo.apps.migrations.tables import Migration

    names = app_names or BaseMigrationManager().get_sorted_app_names()
    log: list[str] = []
    applied_before = await Migration.count() if await Migration.table_exists() else 0
    for name in names:
        manager = ForwardsMigrationManager(app_name=name)
        result = await manager.run()
        if not result.success:
            raise MigrationError(f"migrations of {name!r} failed: {result.message}")
        log.append(f"{name}: {result.message}")
    if applied_before and await Migration.count() != applied_before:
        # New indexes have no statistics yet: SQLite would guess, and may guess wrong.
        await refresh_statistics()
    return log


async def refresh_statistics(*, only_if_missing: bool = False) -> bool:
    """ANALYZE the SQLite database; returns whether it ran (never on PostgreSQL).

    PostgreSQL's autovacuum keeps its statistics fresh; SQLite gathers none unless
    told, and without them picks the wrong index for a team's client list (38 ms
    instead of 3 ms at 100,000 clients): the web app analyses at start-up when the
    statistics are missing, and a nightly job refreshes them.
    """
    engine = get_engine()
    if engine.engine_type != "sqlite":
        return False
    if only_if_missing:
        found = await engine.run_ddl(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'"
        )
        if found:
            return False
    await engine.run_ddl("ANALYZE")
    logger.info("planner statistics refreshed")
    return True


class _AttributeNames:
    """``name in dir(obj)`` without building and sorting the list of every name."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __contains__(self, name: object) -> bool:
        if name in object.__getattribute__(self.obj, "__dict__"):
            return True
        return any(name in klass.__dict__ for klass in type(self.obj).__mro__)


def _speed_up_piccolo_joins() -> None:
    """Piccolo's ``ForeignKey.__getattribute__`` calls ``dir(self)`` on every attribute
    access of a foreign key column (``Deal.client.name``): a third of the time spent
    building a query, ~1 ms of a client card. Its module gets a ``dir`` that only
    answers the membership test it asks, the same answer without the list."""
    from piccolo.columns import column_types

    column_types.dir = _AttributeNames  # type: ignore[attr-defined]


_speed_up_piccolo_joins()
