"""The database part of a backup: a consistent copy, the facts that prove a restore, loading.

SQLite is copied with the online backup API (never the live file, which may be half
written); PostgreSQL is streamed by ``pg_dump -Fc`` straight into ``restic backup
--stdin``. The manifest's facts (applied migrations, row counts of the main tables)
come from the very same consistent state: the SQLite copy, or the PostgreSQL snapshot
that ``pg_dump --snapshot`` dumps.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from core.backup.restic import Restic, summary_of
from core.i18n import _

MAIN_TABLES = (
    "core_client",
    "core_contact",
    "core_deal",
    "core_task",
    "core_timeline",
    "core_user",
    "core_audit",
    "core_attachment",
)
SQLITE_NAME = "kartoteka.sqlite3"
PGDUMP_NAME = "kartoteka.pgdump"
"""The stdin file name: constant, so that retention sees one series of dumps."""
PGDUMP_PATH = "/" + PGDUMP_NAME


class DatabaseError(Exception):
    """The database could not be copied, loaded or proven; the message says why."""


Facts = dict[str, Any]
"""``{"migrations": {app: [migration names]}, "counts": {table: rows}}``."""


# --- SQLite ------------------------------------------------------------------------------


def sqlite_copy(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database, self-contained (no -wal file)."""
    if not source.exists():
        raise DatabaseError(_("The database file %(file)s does not exist.", file=source))
    target.unlink(missing_ok=True)
    src = sqlite3.connect(source, timeout=60)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)  # one step: a single read snapshot, writers carry on (WAL)
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise DatabaseError(
            _("Cannot copy the database %(file)s: %(reason)s", file=source, reason=exc)
        ) from exc
    finally:
        src.close()


def sqlite_facts(path: Path, check_integrity: bool = False) -> Facts:
    if not path.exists():
        raise DatabaseError(_("The database file %(file)s does not exist.", file=path))
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise DatabaseError(_("The database does not open: %(reason)s", reason=exc)) from exc
    try:
        if check_integrity:
            result = [row[0] for row in conn.execute("PRAGMA integrity_check")]
            if result != ["ok"]:
                raise DatabaseError(
                    _(
                        "The database is damaged (integrity check: %(result)s).",
                        result="; ".join(result[:3]),
                    )
                )
        migrations: dict[str, list[str]] = {}
        for app, name in conn.execute(
            "SELECT app_name, name FROM migration ORDER BY app_name, name"
        ):
            migrations.setdefault(app, []).append(name)
        counts = {
            table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
            for table in MAIN_TABLES
        }
    except sqlite3.Error as exc:
        raise DatabaseError(_("The database cannot be read: %(reason)s", reason=exc)) from exc
    finally:
        conn.close()
    return {"migrations": migrations, "counts": counts}


def sqlite_raw_copy(source: Path, target: Path) -> None:
    """For a database too damaged for the backup API: the file and its -wal as they are."""
    shutil.copy2(source, target)
    wal = source.with_name(source.name + "-wal")
    if wal.exists():
        shutil.copy2(wal, target.with_name(target.name + "-wal"))


def sqlite_replace(live: Path, new: Path) -> None:
    """Put ``new`` in place of the live database in one rename.

    The old -wal and -shm go first: a stale write-ahead log next to a different
    database file would be replayed into it. Writers are stopped (maintenance) by then.
    """
    conn = sqlite3.connect(new)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()
    for suffix in ("-wal", "-shm"):
        live.with_name(live.name + suffix).unlink(missing_ok=True)
    os.replace(new, live)


# --- PostgreSQL ----------------------------------------------------------------------------


def pg_conninfo(url: str, database: str | None = None) -> tuple[str, dict[str, str]]:
    """The URL without its password (safe on a command line) and the environment with
    ``PGPASSWORD``; optionally pointing at another database of the same server."""
    parts = urlsplit(url)
    password = unquote(parts.password) if parts.password else ""
    netloc = parts.hostname or ""
    if parts.hostname and ":" in parts.hostname:
        netloc = f"[{parts.hostname}]"
    if parts.port:
        netloc += f":{parts.port}"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    path = f"/{database}" if database is not None else parts.path
    env = dict(os.environ)
    env.pop("PGPASSWORD", None)
    if password:
        env["PGPASSWORD"] = password
    return urlunsplit(("postgresql", netloc, path, parts.query, "")), env


def pg_url_for(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, ""))


def pg_database(url: str) -> str:
    return unquote(urlsplit(url).path.lstrip("/"))


async def pg_facts(conn: Any) -> Facts:
    """Facts from an asyncpg connection (inside the dump's snapshot when backing up)."""
    migrations: dict[str, list[str]] = {}
    rows = await conn.fetch("SELECT app_name, name FROM migration ORDER BY app_name, name")
    for row in rows:
        migrations.setdefault(row["app_name"], []).append(row["name"])
    counts = {
        table: int(await conn.fetchval(f"SELECT count(*) FROM {table}")) for table in MAIN_TABLES
    }
    return {"migrations": migrations, "counts": counts}


def _tool(argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(list(argv), **kwargs)
    except FileNotFoundError:
        raise DatabaseError(
            _(
                "%(tool)s is not installed on this server: install the PostgreSQL client "
                "(package postgresql-client, of the server's version or newer).",
                tool=argv[0],
            )
        ) from None


def _read(stream: IO[bytes]) -> str:
    stream.seek(0)
    text = stream.read().decode("utf-8", "replace").strip()
    return " ".join(text.splitlines()[-3:])[:500]


def pg_dump_to_restic(
    restic: Restic, url: str, snapshot: str, tags: Sequence[str]
) -> dict[str, Any]:
    """``pg_dump -Fc --snapshot`` piped into ``restic backup --stdin``; restic's summary.

    pg_dump's own exit status decides: restic happily stores a dump cut short, so when
    pg_dump failed the snapshot it produced is forgotten and the run fails.
    """
    conninfo, env = pg_conninfo(url)
    argv = ["pg_dump", "-Fc", "--no-password", f"--snapshot={snapshot}", f"--dbname={conninfo}"]
    with tempfile.TemporaryFile() as dump_err, tempfile.TemporaryFile() as store_err:
        dump = _tool(
            argv, stdout=subprocess.PIPE, stderr=dump_err, stdin=subprocess.DEVNULL, env=env
        )
        assert dump.stdout is not None
        try:
            store = restic.popen(
                restic.backup_stdin_args(PGDUMP_NAME, tags),
                stdin=dump.stdout,
                stdout=subprocess.PIPE,
                stderr=store_err,
            )
        except BaseException:
            dump.kill()
            dump.wait()
            raise
        dump.stdout.close()  # restic holds the pipe now; pg_dump sees EPIPE if restic dies
        out, _unused = store.communicate()
        dump_code = dump.wait()
        dump_message, store_message = _read(dump_err), _read(store_err)
    summary = summary_of(out.decode("utf-8", "replace"))
    if dump_code != 0 and summary.get("snapshot_id"):
        restic.forget([summary["snapshot_id"]])
    if store.returncode != 0 and (dump_code == 0 or "snapshot is empty" not in store_message):
        raise restic.failure(store.returncode, store_message)
    if dump_code != 0:
        raise DatabaseError(
            _(
                "pg_dump failed (exit code %(code)s): %(reason)s. The incomplete dump was "
                "discarded.",
                code=dump_code,
                reason=dump_message or _("no message"),
            )
        )
    return summary


def pg_dump_to_file(url: str, target: Path) -> None:
    conninfo, env = pg_conninfo(url)
    with tempfile.TemporaryFile() as err:
        dump = _tool(
            ["pg_dump", "-Fc", "--no-password", f"--file={target}", f"--dbname={conninfo}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
        if dump.wait() != 0:
            target.unlink(missing_ok=True)
            raise DatabaseError(
                _("pg_dump failed: %(reason)s", reason=_read(err) or _("no message"))
            )


def pg_load(
    url: str,
    *,
    restic: Restic | None = None,
    snapshot_id: str = "",
    dump_file: Path | None = None,
    replace_schema: bool = False,
) -> None:
    """Load a ``-Fc`` dump (from the repository or a file) into the database at ``url``.

    ``pg_restore -f -`` turns it into SQL that ``psql --single-transaction`` runs:
    all or nothing. With ``replace_schema`` the same transaction first drops and
    recreates the public schema, so tables made after the backup go too and the
    result is exactly the backup; if anything fails, the database is as it was.
    """
    conninfo, env = pg_conninfo(url)
    preamble = ["-c", "SET client_min_messages = warning", "-c", "SET lock_timeout = '60s'"]
    if replace_schema:
        preamble += ["-c", "DROP SCHEMA public CASCADE", "-c", "CREATE SCHEMA public"]
    with (
        tempfile.TemporaryFile() as source_err,
        tempfile.TemporaryFile() as convert_err,
        tempfile.TemporaryFile() as psql_err,
    ):
        source: subprocess.Popen[bytes] | None = None
        source_file: IO[bytes] | None = None
        if dump_file is not None:
            source_file = dump_file.open("rb")
            source_stdout: IO[bytes] = source_file
        else:
            assert restic is not None
            source = restic.popen(
                restic.dump_args(snapshot_id, PGDUMP_PATH),
                stdout=subprocess.PIPE,
                stderr=source_err,
            )
            assert source.stdout is not None
            source_stdout = source.stdout
        try:
            convert = _tool(
                ["pg_restore", "--no-owner", "--no-privileges", "--file=-"],
                stdin=source_stdout,
                stdout=subprocess.PIPE,
                stderr=convert_err,
            )
            source_stdout.close()
            assert convert.stdout is not None
            psql = _tool(
                [
                    "psql",
                    "-X",
                    "-q",
                    "--no-password",
                    "--single-transaction",
                    "-v",
                    "ON_ERROR_STOP=1",
                    *preamble,
                    "-f",
                    "-",
                    f"--dbname={conninfo}",
                ],
                stdin=convert.stdout,
                stdout=subprocess.DEVNULL,
                stderr=psql_err,
                env=env,
            )
            convert.stdout.close()
            psql_code = psql.wait()
            convert_code = convert.wait()
        finally:
            source_code = source.wait() if source is not None else 0
            if source_file is not None:
                source_file.close()
        if source is not None and restic is not None and source_code != 0:
            raise restic.failure(source_code, _read(source_err))
        if convert_code != 0:
            raise DatabaseError(
                _("pg_restore failed: %(reason)s", reason=_read(convert_err) or _("no message"))
            )
        if psql_code != 0:
            raise DatabaseError(
                _(
                    "Loading the dump into the database failed (nothing was changed): %(reason)s",
                    reason=_read(psql_err) or _("no message"),
                )
            )


async def pg_create_scratch(url: str, name: str) -> None:
    """A fresh, empty database beside the live one (needs the CREATEDB right)."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.PostgresError as exc:
        raise DatabaseError(
            _(
                "Cannot create the scratch database %(name)s for the test restore (the "
                "database user needs the CREATEDB right): %(reason)s",
                name=name,
                reason=exc,
            )
        ) from exc
    finally:
        await conn.close()


async def pg_drop_scratch(url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await conn.close()


async def pg_facts_of(url: str) -> Facts:
    import asyncpg

    try:
        conn = await asyncpg.connect(url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseError(_("The database does not open: %(reason)s", reason=exc)) from exc
    try:
        return await pg_facts(conn)
    except asyncpg.PostgresError as exc:
        raise DatabaseError(_("The database cannot be read: %(reason)s", reason=exc)) from exc
    finally:
        await conn.close()


# --- proving a restore -------------------------------------------------------------------


def compare(expected: Facts, found: Facts) -> list[str]:
    """What differs between the manifest and a restored database, in plain words."""
    problems: list[str] = []
    want, got = expected.get("migrations", {}), found.get("migrations", {})
    for app in sorted(set(want) | set(got)):
        missing = [name for name in want.get(app, []) if name not in got.get(app, [])]
        extra = [name for name in got.get(app, []) if name not in want.get(app, [])]
        if missing or extra:
            problems.append(
                _(
                    "Migrations of %(app)s differ from the backup's manifest "
                    "(missing: %(missing)s; unexpected: %(extra)s).",
                    app=app,
                    missing=", ".join(missing) or "—",
                    extra=", ".join(extra) or "—",
                )
            )
    for table, rows in expected.get("counts", {}).items():
        restored = found.get("counts", {}).get(table)
        if restored != rows:
            problems.append(
                _(
                    "%(table)s has %(restored)s rows after the restore; the backup had %(rows)s.",
                    table=table,
                    restored=restored,
                    rows=rows,
                )
            )
    return problems


def move_into_place(restored: Path, live: Path, aside: Path) -> None:
    """Swap a restored file or folder in; the current one is moved to ``aside`` (kept)."""
    live.parent.mkdir(parents=True, exist_ok=True)
    if live.exists() or live.is_symlink():
        aside.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(live), str(aside))
    shutil.move(str(restored), str(live))
