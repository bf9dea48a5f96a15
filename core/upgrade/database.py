"""The safety copy taken before an upgrade, and putting it back when a migration fails.

SQLite: the online backup API copies a consistent image while other connections may
be open; putting it back uses the same API in the other direction, so the live file
is rewritten page by page under SQLite's own locks (deleting or renaming a WAL
database under an open connection can corrupt it). Only when the live file no longer
opens is it replaced on disk.

PostgreSQL: ``pg_dump -Fc`` inside an exported snapshot, so the row counts taken
alongside describe exactly what was dumped. Putting it back drops every table (those
the failed upgrade created are unknown to the dump) and runs ``pg_restore --clean
--single-transaction``. That needs only the rights the app already has on its own
tables, unlike dropping and re-creating the database (CREATEDB, a maintenance
database, and no other session connected: web processes keep pooled connections).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from core.backup.database import DatabaseError, pg_conninfo, sqlite_copy
from core.db import prepare_sqlite
from core.settings import Settings


class DatabaseCopyError(RuntimeError):
    """A safety copy could not be taken or put back; the message says why."""


@dataclass(frozen=True)
class DatabaseState:
    """What must be the same after a restore: the applied migrations and the row counts."""

    migrations: tuple[str, ...]
    """``app:migration_id``, sorted."""
    rows: dict[str, int]
    """Every table of the database (``schema.table`` outside ``public``) and its rows."""

    def to_json(self) -> dict[str, Any]:
        return {"migrations": list(self.migrations), "rows": self.rows}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DatabaseState:
        return cls(migrations=tuple(data["migrations"]), rows=dict(data["rows"]))

    @property
    def last_migrations(self) -> dict[str, str]:
        """The newest applied migration of each app: "the schema version" in words."""
        last: dict[str, str] = {}
        for entry in self.migrations:
            app, _, migration_id = entry.partition(":")
            last[app] = max(last.get(app, ""), migration_id)
        return last

    def differences(self, now: DatabaseState) -> list[str]:
        """Plain sentences for each way ``now`` differs from this state; empty if none."""
        problems: list[str] = []
        missing = sorted(set(self.migrations) - set(now.migrations))
        extra = sorted(set(now.migrations) - set(self.migrations))
        if missing:
            problems.append(f"migrations missing: {', '.join(missing)}")
        if extra:
            problems.append(f"migrations that should not be there: {', '.join(extra)}")
        for table in sorted(self.rows.keys() | now.rows.keys()):
            before, after = self.rows.get(table), now.rows.get(table)
            if before is None:
                problems.append(f"table {table} should not exist")
            elif after is None:
                problems.append(f"table {table} is missing")
            elif before != after:
                problems.append(f"table {table} has {after} rows instead of {before}")
        return problems


class Database(Protocol):
    suffix: str

    async def copy_to(self, destination: Path) -> DatabaseState:
        """Write a safety copy; returns the state of exactly what was copied."""
        ...

    async def restore_from(self, copy: Path) -> None: ...

    async def state(self) -> DatabaseState: ...


def for_settings(settings: Settings) -> Database:
    if settings.is_sqlite:
        return SqliteDatabase(settings.sqlite_path)
    return PostgresDatabase(settings.database_url)


def _partial(destination: Path) -> Path:
    destination.parent.mkdir(parents=True, exist_ok=True)
    return destination.with_name(destination.name + ".partial")


# --- SQLite ------------------------------------------------------------------------------


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sqlite_state(conn: sqlite3.Connection) -> DatabaseState:
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master "
            "WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
        )
    ]
    rows = {
        table: conn.execute(f"SELECT count(*) FROM {_quote(table)}").fetchone()[0]
        for table in tables
    }
    migrations: tuple[str, ...] = ()
    if "migration" in rows:
        migrations = tuple(
            sorted(
                f"{app}:{name}"
                for app, name in conn.execute("SELECT app_name, name FROM migration")
            )
        )
    return DatabaseState(migrations=migrations, rows=rows)


class SqliteDatabase:
    suffix = ".sqlite3"

    def __init__(self, path: Path) -> None:
        self.path = path

    async def copy_to(self, destination: Path) -> DatabaseState:
        return await asyncio.to_thread(self._copy, destination)

    def _copy(self, destination: Path) -> DatabaseState:
        partial = _partial(destination)
        try:
            sqlite_copy(self.path, partial)
            with closing(sqlite3.connect(partial)) as copy:
                (check,) = copy.execute("PRAGMA quick_check").fetchone()
                if check != "ok":
                    raise sqlite3.DatabaseError(f"the copy does not pass SQLite's check: {check}")
                state = _sqlite_state(copy)
        except (sqlite3.Error, DatabaseError) as exc:
            partial.unlink(missing_ok=True)
            raise DatabaseCopyError(f"SQLite: {exc}") from exc
        os.replace(partial, destination)
        return state

    async def restore_from(self, copy: Path) -> None:
        await asyncio.to_thread(self._restore, copy)

    def _restore(self, copy: Path) -> None:
        try:
            with (
                closing(sqlite3.connect(f"file:{copy}?mode=ro", uri=True)) as source,
                closing(sqlite3.connect(self.path, timeout=30)) as live,
            ):
                source.backup(live)
        except sqlite3.OperationalError:
            raise  # locked, out of space: the file must not be swapped under its users
        except sqlite3.DatabaseError:
            # The live file itself is damaged ("not a database", "malformed"): replace it.
            for suffix in ("-wal", "-shm"):
                self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)
            replacement = self.path.with_name(self.path.name + ".restoring")
            shutil.copyfile(copy, replacement)
            os.replace(replacement, self.path)
        prepare_sqlite(str(self.path))  # WAL is a property of the file: keep it

    async def state(self) -> DatabaseState:
        def read() -> DatabaseState:
            with closing(sqlite3.connect(self.path, timeout=30)) as conn:
                return _sqlite_state(conn)

        return await asyncio.to_thread(read)


# --- PostgreSQL --------------------------------------------------------------------------

_TABLES = (
    "SELECT schemaname, tablename FROM pg_tables "
    "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
)


def _table_key(schema: str, table: str) -> str:
    return table if schema == "public" else f"{schema}.{table}"


async def _pg_state(conn: Any) -> DatabaseState:
    rows: dict[str, int] = {}
    for record in await conn.fetch(_TABLES):
        schema, table = record["schemaname"], record["tablename"]
        count = await conn.fetchval(f"SELECT count(*) FROM {_quote(schema)}.{_quote(table)}")
        rows[_table_key(schema, table)] = int(count)
    migrations: tuple[str, ...] = ()
    if "migration" in rows:
        records = await conn.fetch("SELECT app_name, name FROM migration")
        migrations = tuple(sorted(f"{r['app_name']}:{r['name']}" for r in records))
    return DatabaseState(migrations=migrations, rows=rows)


class PostgresDatabase:
    suffix = ".pgdump"

    def __init__(self, url: str) -> None:
        self.url = url

    async def _tool(self, *args: str, connect: bool = True) -> None:
        # Password in PGPASSWORD: a command line is visible to every user of the machine.
        target, env = pg_conninfo(self.url)
        command = [args[0], f"--dbname={target}", *args[1:]] if connect else list(args)
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
        except FileNotFoundError as exc:
            raise DatabaseCopyError(f"{args[0]} is not installed (postgresql-client)") from exc
        _, stderr = await process.communicate()
        if process.returncode != 0:
            detail = stderr.decode(errors="replace").strip()[-1000:]
            raise DatabaseCopyError(f"{args[0]} exited with {process.returncode}: {detail}")

    async def _connect(self) -> Any:
        import asyncpg

        try:
            return await asyncpg.connect(self.url)
        except (OSError, asyncpg.PostgresError) as exc:
            raise DatabaseCopyError(f"cannot connect to PostgreSQL: {exc}") from exc

    async def copy_to(self, destination: Path) -> DatabaseState:
        partial = _partial(destination)
        conn = await self._connect()
        try:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
                state = await _pg_state(conn)
                await self._tool(
                    "pg_dump",
                    "--format=custom",
                    f"--snapshot={snapshot}",
                    f"--file={partial}",
                )
            # the archive reads back
            await self._tool("pg_restore", "--list", str(partial), connect=False)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        finally:
            await conn.close()
        os.replace(partial, destination)
        return state

    async def restore_from(self, copy: Path) -> None:
        conn = await self._connect()
        try:
            async with conn.transaction():
                for record in await conn.fetch(_TABLES):
                    name = f"{_quote(record['schemaname'])}.{_quote(record['tablename'])}"
                    await conn.execute(f"DROP TABLE IF EXISTS {name} CASCADE")
        finally:
            await conn.close()
        await self._tool(
            "pg_restore",
            "--clean",
            "--if-exists",
            "--single-transaction",
            "--exit-on-error",
            "--no-owner",
            str(copy),
        )

    async def state(self) -> DatabaseState:
        conn = await self._connect()
        try:
            return await _pg_state(conn)
        finally:
            await conn.close()
