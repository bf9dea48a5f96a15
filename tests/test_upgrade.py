"""`kartoteka upgrade`: an old schema is brought up to date, a failing migration is
rolled back from the safety copy, an incompatible plugin is refused before anything
changes, and nothing pending is a no-op. Real SQLite, and real PostgreSQL (a scratch
database per test) when KARTOTEKA_TEST_DATABASE_URL is set."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

import core
from core import cli
from core.manifest import PluginManifest
from core.plugins import InstalledPlugin, accepts_core, discover

PG_URL = os.environ.get("KARTOTEKA_TEST_DATABASE_URL", "")
TEST_PACKAGES = (
    "tests.plugins.sample",
    "tests.plugins.broken_migration",
    "tests.plugins.old_plugin",
)
FIRST_CORE_MIGRATION = "2026-11-22T10:34:12:217948"
BROKEN_DONE = "broken_migration:2026-11-23T09:00:00:000000"
BROKEN_FAILING = "broken_migration:2026-11-23T09:30:00:000000"


@dataclass
class Install:
    data_dir: Path
    database_url: str

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        """Raw SQL straight to the database, past the app's own code."""
        if self.is_sqlite:
            with closing(sqlite3.connect(self.database_url.split("///", 1)[1])) as conn:
                rows = conn.execute(statement).fetchall()
                conn.commit()
                return rows

        async def run() -> list[tuple[Any, ...]]:
            import asyncpg

            conn = await asyncpg.connect(self.database_url)
            try:
                return [tuple(record) for record in await conn.fetch(statement)]
            finally:
                await conn.close()

        return asyncio.run(run())

    def tables(self) -> set[str]:
        if self.is_sqlite:
            query = "SELECT name FROM sqlite_master WHERE type = 'table'"
        else:
            query = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        return {row[0] for row in self.sql(query)}

    def counts(self) -> dict[str, int]:
        return {
            table: self.sql(f"SELECT count(*) FROM {table}")[0][0]
            for table in sorted(self.tables())
            if not table.startswith("sqlite_")
        }

    def migrations(self) -> set[str]:
        return {f"{app}:{name}" for app, name in self.sql("SELECT app_name, name FROM migration")}

    def file(self, name: str) -> Path:
        return self.data_dir / name


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


async def _admin_sql(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def _use_plugins(*names: str) -> None:
    from core import runtime as runtime_module
    from core.settings import reload_settings

    os.environ["KARTOTEKA_PLUGINS"] = ",".join(names)
    reload_settings()
    runtime_module.set_runtime(None)


ENGINES = [
    "sqlite",
    pytest.param(
        "postgres",
        marks=pytest.mark.skipif(not PG_URL, reason="KARTOTEKA_TEST_DATABASE_URL not set"),
    ),
]


@pytest.fixture(params=ENGINES)
def install(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runtime: Any
) -> Iterator[Install]:
    """The CLI against its own data dir and database, no plugins enabled."""
    from core import runtime as runtime_module
    from core.settings import reload_settings

    previous = runtime_module._current
    data_dir = tmp_path / "data"
    scratch = ""
    if request.param == "postgres":
        scratch = f"kartoteka_upgrade_{uuid.uuid4().hex[:10]}"
        asyncio.run(_admin_sql(f'CREATE DATABASE "{scratch}"'))
        url = _with_database(PG_URL, scratch)
        monkeypatch.setenv("DATABASE_URL", url)
    else:
        url = f"sqlite:///{data_dir / 'kartoteka.sqlite3'}"
        monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("KARTOTEKA_DATA_DIR", str(data_dir))
    monkeypatch.setenv("KARTOTEKA_PLUGINS", "")
    monkeypatch.setattr(
        "core.plugins.discover",
        lambda extra_packages=(): discover([*TEST_PACKAGES, *extra_packages]),
    )
    monkeypatch.setattr(cli, "discover", lambda: discover(list(TEST_PACKAGES)))
    reload_settings()
    runtime_module.set_runtime(None)
    try:
        yield Install(data_dir=data_dir, database_url=url)
    finally:
        monkeypatch.undo()
        reload_settings()
        runtime_module.set_runtime(previous)
        from core.db import bind_tables

        bind_tables()  # migrating the CLI's database pointed the tables there
        if scratch:
            asyncio.run(_admin_sql(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))


def _migrate_core_to(migration_id: str) -> None:
    """A database as an older Kartoteka left it: the core only up to ``migration_id``."""
    from piccolo.apps.migrations.commands.forwards import ForwardsMigrationManager

    from core.db import bind_tables, prepare_sqlite
    from core.runtime import get_runtime

    async def run() -> None:
        settings = get_runtime().settings
        if settings.is_sqlite:
            prepare_sqlite(str(settings.sqlite_path))
        bind_tables()
        result = await ForwardsMigrationManager("core", migration_id=migration_id).run()
        assert result.success, result.message

    asyncio.run(run())


def _core_migration_ids() -> set[str]:
    folder = Path(core.__file__).parent / "piccolo_migrations"
    ids = set()
    for path in folder.glob("core_*.py"):
        for line in path.read_text().splitlines():
            if line.startswith("ID = "):
                ids.add("core:" + line.split('"')[1])
    return ids


def _add_clients(install: Install) -> None:
    """Rows valid for the first core schema (and every later one)."""
    install.sql(
        "INSERT INTO core_user (username, full_name, role) VALUES ('olga', 'Olga Old', 'admin')"
    )
    owner = "(SELECT id FROM core_user WHERE username = 'olga')"
    install.sql(
        "INSERT INTO core_client (name, name_search, inn, responsible) VALUES "
        f"('ООО «Ромашка»', 'ромашка', '7707083893', {owner}), "
        f"('Иван Петров', 'иван петров', '', {owner})"
    )
    install.sql(
        "INSERT INTO core_contact (client, name) "
        "SELECT id, 'Пётр Сидоров' FROM core_client WHERE inn = '7707083893'"
    )
    install.sql(
        "INSERT INTO core_contact_point (client, kind, value) "
        "SELECT id, 'phone', '+79123456789' FROM core_client WHERE inn = '7707083893'"
    )


def _client_rows(install: Install) -> list[tuple[Any, ...]]:
    return install.sql("SELECT id, name, inn, responsible FROM core_client ORDER BY id")


def _maintenance(install: Install) -> dict[str, Any] | None:
    flag = install.file("maintenance.json")
    return json.loads(flag.read_text()) if flag.exists() else None


def test_upgrade_from_an_older_schema_keeps_the_data(
    install: Install, capsys: pytest.CaptureFixture[str]
) -> None:
    _migrate_core_to(FIRST_CORE_MIGRATION)
    _add_clients(install)
    assert install.migrations() == {f"core:{FIRST_CORE_MIGRATION}"}
    clients = _client_rows(install)
    contacts = install.sql("SELECT client, name FROM core_contact")
    old_counts = install.counts()
    assert "core_audit" not in old_counts, "the fixture really is the older schema"

    assert cli.main(["upgrade"]) == 0
    out = capsys.readouterr().out
    assert f"upgraded from the previous version to {core.__version__}" in out

    assert install.migrations() == _core_migration_ids(), "every core migration ran"
    assert _client_rows(install) == clients
    assert install.sql("SELECT client, name FROM core_contact") == contacts
    new_counts = install.counts()
    for table, count in old_counts.items():
        if table != "migration":
            assert new_counts[table] == count, table
    assert install.file("version").read_text().strip() == core.__version__
    assert _maintenance(install) is None
    assert not install.file("upgrade-running.json").exists()
    copies = list((install.data_dir / "safety").glob("pre-upgrade-unknown-to-*"))
    assert len(copies) == 1
    if install.is_sqlite:
        with closing(sqlite3.connect(copies[0])) as copy:
            assert copy.execute("SELECT count(*) FROM core_client").fetchone() == (2,)
            assert copy.execute("SELECT count(*) FROM migration").fetchone() == (1,)

    (entry,) = install.sql(
        "SELECT actor_name, object_id, summary, changes FROM core_audit "
        "WHERE action = 'system.upgrade'"
    )
    actor, version, summary, changes = entry
    assert actor.startswith("cli:") and version == core.__version__
    assert f"to {core.__version__}" in summary
    changes = json.loads(changes) if isinstance(changes, str) else changes
    assert changes["version"] == [None, core.__version__]
    assert sorted(changes["migrations"][1]) == sorted(
        _core_migration_ids() - {f"core:{FIRST_CORE_MIGRATION}"}
    )

    # What `kartoteka run` does before serving: nothing left to migrate, first run works.
    assert cli.main(["migrate"]) == 0
    assert "No migrations need to be run" in capsys.readouterr().out
    assert cli.main(["upgrade"]) == 0
    assert "no pending migrations" in capsys.readouterr().out


def test_a_failing_migration_is_rolled_back_and_nothing_is_lost(
    install: Install, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["migrate"]) == 0
    _add_clients(install)
    assert cli.main(["upgrade"]) == 0  # records the version the data is at
    capsys.readouterr()
    clients = _client_rows(install)
    counts = install.counts()
    migrations = install.migrations()
    assert counts["core_contact"] == 1

    _use_plugins("broken_migration")
    assert cli.main(["upgrade"]) == 3
    err = capsys.readouterr().err
    assert (
        f"migration {BROKEN_FAILING} failed: RuntimeError: this migration fails on purpose" in err
    )
    assert "checked: migrations and row counts are as before" in err

    # Both what the finished migration committed and what the failing one half-did are gone.
    assert _client_rows(install) == clients
    counts["core_audit"] += 1  # the failure's own entry, written after the check
    assert install.counts() == counts
    assert install.migrations() == migrations
    assert not {"broken_done", "broken_half"} & install.tables()
    assert not install.file("upgrade-running.json").exists()

    from core.upgrade import failed_upgrade

    failure = failed_upgrade()
    assert failure == json.loads(install.file("upgrade-failed.json").read_text())
    assert failure["failed_migration"] == BROKEN_FAILING
    assert "fails on purpose" in failure["error"]
    assert failure["applied_before_failure"] == [BROKEN_DONE]
    assert failure["restored"] is True and failure["restore_problems"] == []
    assert failure["from_version"] == failure["to_version"] == core.__version__
    assert Path(failure["safety_copy"]).exists()

    state = _maintenance(install)
    assert state is not None and state["kind"] == "upgrade"
    assert f"The upgrade to Kartoteka {core.__version__} failed" in state["reason"]
    assert (
        f"Your data is intact: the database is back as it was at {core.__version__}"
        in state["reason"]
    )
    assert "start the image tag you ran before" in state["reason"]
    assert "fails on purpose" not in state["reason"], "no internals on a public page"

    (audit,) = install.sql("SELECT summary FROM core_audit WHERE action = 'system.upgrade_failed'")
    assert BROKEN_FAILING in audit[0] and "restored" in audit[0]

    # The web answers 503 with the reason while the failure stands.
    from litestar.testing import TestClient

    from core.runtime import get_runtime
    from core.web.app import create_app

    with TestClient(app=create_app(get_runtime())) as http:
        response = http.get("/login")
    assert response.status_code == 503
    assert "Your data is intact" in response.text

    # The same code again does not blindly retry...
    assert cli.main(["upgrade"]) == 2
    assert "--retry" in capsys.readouterr().err
    assert install.counts() == counts

    # ...while the previous set-up (here: without the plugin) matches the data and runs.
    _use_plugins()
    assert cli.main(["upgrade"]) == 0
    assert "maintenance mode is off" in capsys.readouterr().out
    assert _maintenance(install) is None
    assert not install.file("upgrade-failed.json").exists()
    assert list((install.data_dir / "safety").glob("upgrade-failed-*.json")), "kept for the record"


class _Killed(BaseException):
    """Stands in for the process dying (SIGKILL, power loss): no except clause sees it."""


def test_an_interrupted_upgrade_is_rolled_back_on_the_next_run(
    install: Install, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.upgrade import migrations

    _migrate_core_to(FIRST_CORE_MIGRATION)
    _add_clients(install)
    counts = install.counts()
    real_apply = migrations.apply_one
    calls: list[str] = []

    async def dies_after_the_second(app_name: str, migration_id: str) -> None:
        await real_apply(app_name, migration_id)
        calls.append(migration_id)
        if len(calls) == 2:
            raise _Killed

    monkeypatch.setattr(migrations, "apply_one", dies_after_the_second)
    with pytest.raises(_Killed):
        cli.main(["upgrade"])
    monkeypatch.setattr(migrations, "apply_one", real_apply)
    assert install.file("upgrade-running.json").exists()
    assert _maintenance(install) is not None
    assert len(install.migrations()) == 3, "half-way: two of four pending migrations ran"

    assert cli.main(["upgrade"]) == 3
    assert "stopped before it finished" in capsys.readouterr().err
    assert install.counts() == counts
    assert install.migrations() == {f"core:{FIRST_CORE_MIGRATION}"}

    assert cli.main(["upgrade", "--retry"]) == 0
    assert install.migrations() == _core_migration_ids()
    assert _maintenance(install) is None
    assert not install.file("upgrade-failed.json").exists()


def test_a_plugin_that_rejects_the_core_is_refused_before_anything_changes(
    install: Install, capsys: pytest.CaptureFixture[str]
) -> None:
    _migrate_core_to(FIRST_CORE_MIGRATION)
    _add_clients(install)
    counts = install.counts()
    files = sorted(path.name for path in install.data_dir.iterdir())

    _use_plugins("old_plugin")
    assert cli.main(["upgrade"]) == 2
    err = capsys.readouterr().err
    assert "nothing was changed" in err
    assert (
        f"plugin old_plugin 0.9 works with core versions '>=0.0.1,<0.1', not with {core.__version__}"
        in err
    )

    assert install.counts() == counts
    assert install.migrations() == {f"core:{FIRST_CORE_MIGRATION}"}
    assert sorted(path.name for path in install.data_dir.iterdir()) == files
    assert not (install.data_dir / "safety").exists()
    assert _maintenance(install) is None


def test_nothing_pending_is_a_no_op(install: Install, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["migrate"]) == 0
    _add_clients(install)
    counts = install.counts()
    capsys.readouterr()

    assert cli.main(["upgrade"]) == 0
    assert f"no pending migrations; version {core.__version__} recorded" in capsys.readouterr().out
    assert install.file("version").read_text() == core.__version__ + "\n"
    assert install.counts() == counts, "no audit entry, no change at all"
    assert not (install.data_dir / "safety").exists()
    assert _maintenance(install) is None


def test_upgrade_waits_for_a_restore_or_another_upgrade(
    install: Install, capsys: pytest.CaptureFixture[str]
) -> None:
    from core import maintenance

    _migrate_core_to(FIRST_CORE_MIGRATION)
    maintenance.enter("restore", "Restoring the backup of 1 March.")
    assert cli.main(["upgrade"]) == 2
    assert "maintenance (restore) is on" in capsys.readouterr().err
    maintenance.leave()

    with open(install.file("upgrade.lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert cli.main(["upgrade"]) == 2
        assert "another `kartoteka upgrade` is running" in capsys.readouterr().err
    assert install.migrations() == {f"core:{FIRST_CORE_MIGRATION}"}
    assert not (install.data_dir / "safety").exists()


def test_an_incompatible_plugin_cannot_be_enabled(
    install: Install, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["plugins", "enable", "old_plugin"]) == 2
    assert "works with core versions '>=0.0.1,<0.1'" in capsys.readouterr().err


def _plugin(core_versions: str) -> InstalledPlugin:
    manifest = PluginManifest(
        name="p", version="1", summary="p", hooks="x.p", core_versions=core_versions
    )
    return InstalledPlugin(manifest=manifest, package="x.p")


@pytest.mark.parametrize(
    ("core_versions", "version", "accepted"),
    [
        (">=0.1", "0.1.0", True),
        (">=0.1,<0.2", "0.2.0", False),
        ("~=0.1.0", "0.1.5", True),
        (">=0.1", "0.2.0.dev1", True),  # a development build does not lock plugins out
        ("not a specifier", "0.1.0", False),
    ],
)
def test_core_versions_are_pep_440_specifiers(
    core_versions: str, version: str, accepted: bool
) -> None:
    assert accepts_core(_plugin(core_versions), version) is accepted


def test_a_restore_that_cannot_be_confirmed_says_so(
    install: Install, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.upgrade.database import PostgresDatabase, SqliteDatabase

    async def does_nothing(self: Any, copy: Path) -> None:
        return None

    monkeypatch.setattr(SqliteDatabase, "restore_from", does_nothing)
    monkeypatch.setattr(PostgresDatabase, "restore_from", does_nothing)
    assert cli.main(["migrate"]) == 0
    _use_plugins("broken_migration")
    assert cli.main(["upgrade"]) == 3
    err = capsys.readouterr().err
    assert "COULD NOT BE CONFIRMED" in err and "table broken_done should not exist" in err
    failure = json.loads(install.file("upgrade-failed.json").read_text())
    assert failure["restored"] is False
    state = _maintenance(install)
    assert state is not None and "Do not use this install" in state["reason"]
    assert cli.main(["upgrade"]) == 2, "no way on until someone has looked"
    assert "could not be confirmed" in capsys.readouterr().err


@pytest.mark.slow
def test_with_backups_configured_a_restic_snapshot_comes_first(
    install: Install,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import subprocess

    repository, password = tmp_path / "restic-repo", tmp_path / "restic-password"
    password.write_text("correct horse battery staple\n")
    monkeypatch.setenv("KARTOTEKA_BACKUP_REPOSITORY", str(repository))
    monkeypatch.setenv("KARTOTEKA_BACKUP_PASSWORD_FILE", str(password))
    assert cli.main(["migrate"]) == 0
    _add_clients(install)
    _use_plugins("sample")  # brings one migration
    capsys.readouterr()

    assert cli.main(["upgrade"]) == 0
    assert "restic snapshot before the upgrade: " in capsys.readouterr().out
    listing = subprocess.run(
        [
            "restic",
            "--repo",
            str(repository),
            "--password-file",
            str(password),
            "snapshots",
            "--json",
            "--tag",
            "pre-upgrade",
        ],
        capture_output=True,
        check=True,
        text=True,
    )
    assert json.loads(listing.stdout), "a snapshot tagged pre-upgrade is in the repository"
    assert "sample:2026-11-22T11:00:00:000000" in install.migrations()


def test_a_damaged_sqlite_file_is_replaced_by_the_copy(tmp_path: Path) -> None:
    from core.upgrade.database import SqliteDatabase

    live = tmp_path / "kartoteka.sqlite3"
    with closing(sqlite3.connect(live)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE core_client (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO core_client (name) VALUES ('Ромашка'), ('Лютик')")
        conn.commit()
    database = SqliteDatabase(live)
    before = asyncio.run(database.copy_to(tmp_path / "safety" / "copy.sqlite3"))
    live.write_bytes(b"not a database any more" * 100)

    asyncio.run(database.restore_from(tmp_path / "safety" / "copy.sqlite3"))
    assert before.differences(asyncio.run(database.state())) == []
    assert before.rows == {"core_client": 2}
    with closing(sqlite3.connect(live)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
