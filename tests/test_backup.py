"""Backups with the real restic binary, the real database (SQLite, or PostgreSQL under
``make test-server``) and real pg_dump: backing up, retention, proof by test restore,
restore end to end, plain-language errors, the admin page and the banner.

restic spends about half a second on its key derivation at every command, so the
tests share one repository per module and keep the data small.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import re
import stat
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from core.backup import database as dbtools
from core.backup.engine import (
    BackupFailed,
    list_backups,
    run_backup,
    run_check,
    verify_latest,
)
from core.backup.restic import PGDUMP_TAG, TAG, Restic, ResticError, Version, classify
from core.backup.status import backup_status
from core.tables import BackupRun, Notification
from tests.support import TEST_PLUGIN_PACKAGE, post

SERVER_URL = os.environ.get("KARTOTEKA_TEST_DATABASE_URL", "")
PASSWORD = "correct horse battery staple\n"


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One repository for the module; the first backup initialises it."""
    root = tmp_path_factory.mktemp("restic")
    password = root / "password"
    password.write_text(PASSWORD)
    password.chmod(stat.S_IRUSR | stat.S_IWUSR)
    return {"repo": root / "repo", "password": password, "root": root}


@pytest.fixture
def backups_on(runtime: Any, repository: dict[str, Path], monkeypatch: Any) -> Any:
    settings = dataclasses.replace(
        runtime.settings,
        backup_repository=str(repository["repo"]),
        backup_password_file=str(repository["password"]),
    )
    monkeypatch.setattr(runtime, "settings", settings)
    return settings


def restic_for(settings: Any) -> Restic:
    return Restic.from_settings(settings)


async def runs(kind: str | None = None) -> list[dict[str, Any]]:
    query = BackupRun.select().order_by(BackupRun.id)
    if kind:
        query = query.where(BackupRun.kind == kind)
    return list(await query)


# --- messages ------------------------------------------------------------------------------


V014, V017, V0171 = Version(0, 14, 0), Version(0, 17, 0), Version(0, 17, 1)


@pytest.mark.parametrize(
    ("code", "stderr", "version", "kind"),
    [
        (1, "Fatal: wrong password or no key found\n", V014, "wrong_password"),
        (12, "Fatal: something else\n", V0171, "wrong_password"),
        (
            1,
            "Fatal: unable to open config file: stat /x/config: no such file or directory\n"
            "Is there a repository at the following location?\n/x\n",
            V014,
            "missing_repository",
        ),
        (
            10,
            "Fatal: repository does not exist: unable to open config file\n",
            V017,
            "missing_repository",
        ),
        (11, "Fatal: unable to create lock\n", V017, "locked"),
        (
            1,
            "Fatal: unable to save snapshot: write /r/data/x: no space left on device\n",
            V014,
            "disk_full",
        ),
        (
            1,
            "Fatal: unable to open repository: dial tcp 10.0.0.1:8000: connection refused\n",
            V014,
            "unreachable",
        ),
        (
            1,
            '{"message_type":"exit_error","code":1,"message":"Fatal: wrong password or no key found"}\n',
            V017,
            "wrong_password",
        ),
        (1, "Fatal: strange things\n", V014, "failed"),
        (10, "Fatal: strange things\n", V014, "failed"),  # 0.14 has no exit code 10
    ],
)
def test_failures_are_classified(code: int, stderr: str, version: Version, kind: str) -> None:
    error = classify(code, stderr, version, "rest:https://bob:s3cret@backup.example/repo", "/pw")
    assert error.kind == kind
    assert "s3cret" not in error.message and "s3cret" not in error.detail


def test_lock_message_names_the_holder() -> None:
    stderr = (
        "unable to create lock in backend: repository is already locked by PID 28549 on vm "
        "by root (UID 0, GID 0)\nlock was created at 2026-11-22 22:40:33 (1.87s ago)\n"
        "storage ID 0aeeb626\nthe `unlock` command can be used to remove stale locks\n"
    )
    error = classify(1, stderr, V014, "/srv/repo", "/pw")
    assert error.kind == "locked"
    assert "process 28549 on vm, user root, since 2026-11-22 22:40:33" in error.message
    assert "restic unlock" in error.message


def test_restic_not_installed_and_password_file_problems(tmp_path: Path) -> None:
    missing = Restic("/srv/repo", str(tmp_path / "pw"), tmp_path, binary="no-such-restic")
    with pytest.raises(ResticError) as err:
        missing.snapshots()
    assert err.value.kind == "password_file" and "does not exist" in err.value.message
    (tmp_path / "pw").write_text(PASSWORD)
    with pytest.raises(ResticError) as err:
        missing.snapshots()
    assert err.value.kind == "not_installed"
    assert "Install the restic package" in err.value.message


def test_restic_sees_storage_credentials_but_no_app_secrets(
    tmp_path: Path, monkeypatch: Any
) -> None:
    password = tmp_path / "pw"
    password.write_text(PASSWORD)
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:db-secret@db/kartoteka")
    monkeypatch.setenv("KARTOTEKA_SECRET_KEY", "app-secret")
    monkeypatch.setenv("RESTIC_PASSWORD", "another way in")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3-secret")
    env = Restic("s3:s3.example/bucket", str(password), tmp_path).env()
    assert env["RESTIC_PASSWORD_FILE"] == str(password)
    assert env["AWS_SECRET_ACCESS_KEY"] == "s3-secret" and env["PATH"]
    assert not {"DATABASE_URL", "KARTOTEKA_SECRET_KEY", "RESTIC_PASSWORD"} & set(env)


def test_version_is_detected_from_the_binary() -> None:
    version = Restic("/nowhere", "/nowhere", Path("/tmp")).version
    assert version.at_least(0, 14)
    assert version.has_exit_codes == version.at_least(0, 17)


# --- backing up, retention, verification --------------------------------------------------


@pytest.mark.slow
async def test_backup_initialises_verifies_and_keeps_to_the_policy(
    db: None, admin: dict[str, Any], backups_on: Any, monkeypatch: Any
) -> None:
    from core.services import clients

    await clients.create_client({"name": "ООО «Ромашка»", "responsible": admin["id"]}, admin["id"])
    first = await run_backup("scheduled")
    assert set(first["seconds"]) >= {"database", "files", "retention", "total"}
    verified = await verify_latest()
    assert verified["snapshot_id"] == first["snapshot_id"]
    assert verified["counts"]["core_client"] == 1 and verified["counts"]["core_user"] == 1
    assert verified["migrations"]["core"], "the migrations were read from the restored copy"

    [backup] = await runs("backup")
    assert backup["status"] == "ok" and backup["size_bytes"] > 0
    assert len(backup["snapshot_id"]) == 64, "the full id, even from restic 0.14"
    assert (await backup_status()).ok

    from core.runtime import get_runtime

    runtime = get_runtime()
    monkeypatch.setattr(
        runtime,
        "settings",
        dataclasses.replace(
            backups_on, backup_keep_daily=1, backup_keep_weekly=0, backup_keep_monthly=0
        ),
    )
    kept = await run_backup("pre-upgrade")
    second = await run_backup("manual")
    backups = list_backups()
    assert [b["id"] for b in backups] == [second["snapshot_id"], kept["snapshot_id"]], (
        "today's older one forgotten, the pre-upgrade one kept"
    )
    snapshots = restic_for(runtime.settings).snapshots([TAG])
    dumps = [s for s in snapshots if PGDUMP_TAG in s["tags"]]
    assert len(dumps) == (0 if backups_on.is_sqlite else 2), "its database dump went with it"
    assert backups[0]["trigger"] == "manual"
    details = (await runs("backup"))[-1]["details"]
    assert '"removed": ' in details and '"repository"' in details


async def test_verification_catches_a_manifest_mismatch(
    db: None, admin: dict[str, Any], backups_on: Any, monkeypatch: Any
) -> None:
    """A backup whose manifest says one client more than its database holds."""
    real_sqlite, real_pg = dbtools.sqlite_facts, dbtools.pg_facts

    def lying_sqlite(path: Path, check_integrity: bool = False) -> dbtools.Facts:
        facts = real_sqlite(path, check_integrity)
        facts["counts"]["core_client"] += 1
        return facts

    async def lying_pg(conn: Any) -> dbtools.Facts:
        facts = await real_pg(conn)
        facts["counts"]["core_client"] += 1
        return facts

    with monkeypatch.context() as lie:
        lie.setattr(dbtools, "sqlite_facts", lying_sqlite)
        lie.setattr(dbtools, "pg_facts", lying_pg)
        await run_backup("manual")
    with pytest.raises(BackupFailed) as err:
        await verify_latest()
    assert "core_client has 0 rows after the restore; the backup had 1." in err.value.message
    verify = (await runs("verify"))[-1]
    assert verify["status"] == "failed" and "core_client" in verify["message"]
    status = await backup_status()
    assert any("verification failed" in problem for problem in status.problems)
    [alert] = await Notification.select().where(Notification.user == admin["id"])
    assert alert["kind"] == "backup" and "core_client" in alert["text"]
    assert alert["url"] == "/admin/backups"


def _shim(folder: Path, name: str, script: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return folder


async def test_a_failing_pg_dump_never_counts_as_a_backup(
    backups_on: Any, repository: dict[str, Path], tmp_path: Path, monkeypatch: Any
) -> None:
    """pg_dump writes half a dump and fails: restic would keep it; we must not."""
    restic = restic_for(backups_on)
    restic.ensure_repository()
    shim = _shim(
        tmp_path / "bin",
        "pg_dump",
        "head -c 5000 /dev/urandom\necho 'pg_dump: error: connection lost' >&2\nexit 1\n",
    )
    monkeypatch.setenv("PATH", f"{shim}:{os.environ['PATH']}")
    tags = [TAG, "test", "set-halfdump", PGDUMP_TAG]
    with pytest.raises(dbtools.DatabaseError) as err:
        await asyncio.to_thread(
            dbtools.pg_dump_to_restic,
            restic,
            "postgresql://nobody:secret@127.0.0.1/none",
            "s1",
            tags,
        )
    assert "pg_dump failed (exit code 1): pg_dump: error: connection lost" in str(err.value)
    assert "discarded" in str(err.value)
    assert not restic.snapshots(["set-halfdump"]), "the truncated dump was forgotten"


@pytest.mark.skipif(not SERVER_URL, reason="needs PostgreSQL (make test-server)")
async def test_pg_backup_with_a_failing_pg_dump_is_recorded_failed(
    db: None, admin: dict[str, Any], backups_on: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    restic = restic_for(backups_on)
    before = list_backups(restic)
    shim = _shim(tmp_path / "bin", "pg_dump", "head -c 3000 /dev/urandom\nexit 1\n")
    monkeypatch.setenv("PATH", f"{shim}:{os.environ['PATH']}")
    with pytest.raises(BackupFailed) as err:
        await run_backup("manual")
    assert "pg_dump failed" in err.value.message
    [run] = await runs("backup")
    assert run["status"] == "failed" and run["snapshot_id"] == ""
    assert list_backups(restic) == before
    everything = restic.snapshots([TAG])
    complete = {
        t for s in everything if "files" in s["tags"] for t in s["tags"] if t.startswith("set-")
    }
    assert all(
        t in complete
        for s in everything
        if PGDUMP_TAG in s["tags"]
        for t in s["tags"]
        if t.startswith("set-")
    ), "no dump without its backup is left"


@pytest.mark.skipif(not SERVER_URL, reason="needs PostgreSQL (make test-server)")
async def test_real_pg_dump_of_a_missing_database_fails(backups_on: Any) -> None:
    restic = restic_for(backups_on)
    missing = dbtools.pg_url_for(SERVER_URL, "kartoteka_no_such_database")
    with pytest.raises(dbtools.DatabaseError) as err:
        await asyncio.to_thread(
            dbtools.pg_dump_to_restic, restic, missing, "s", [TAG, "set-missing"]
        )
    assert "pg_dump failed" in str(err.value) and "kartoteka_no_such_database" in str(err.value)
    assert not restic.snapshots(["set-missing"])


# --- plain-language errors -------------------------------------------------------------


async def test_wrong_password_missing_repository_and_lock_are_explained(
    db: None,
    admin: dict[str, Any],
    backups_on: Any,
    repository: dict[str, Path],
    tmp_path: Path,
    runtime: Any,
    monkeypatch: Any,
) -> None:
    restic = restic_for(backups_on)
    restic.ensure_repository()

    wrong = tmp_path / "wrong-password"
    wrong.write_text("not the password\n")
    monkeypatch.setattr(
        runtime, "settings", dataclasses.replace(backups_on, backup_password_file=str(wrong))
    )
    with pytest.raises(BackupFailed) as err:
        await run_backup("scheduled")
    assert err.value.message.startswith("The backup password is wrong")
    assert str(wrong) in err.value.message and "not the password" not in err.value.message
    assert (await runs("backup"))[-1]["message"] == err.value.message
    assert await Notification.count().where(Notification.user == admin["id"]) == 1

    monkeypatch.setattr(
        runtime,
        "settings",
        dataclasses.replace(backups_on, backup_repository=str(tmp_path / "no-repo")),
    )
    with pytest.raises(BackupFailed) as err:
        await verify_latest()
    assert err.value.message == (
        f"There is no backup repository at {tmp_path / 'no-repo'}: it does not exist or was "
        "never initialised."
    )

    monkeypatch.setattr(runtime, "settings", backups_on)
    holder = subprocess.Popen(
        ["restic", "backup", "--stdin", "--stdin-filename", "hold", "--host", "lock-holder"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=restic.env(),
    )
    try:
        assert holder.stdin is not None
        holder.stdin.write(b"keeps the repository locked")
        holder.stdin.flush()
        locks = repository["repo"] / "locks"
        deadline = time.monotonic() + 20
        while not any(locks.iterdir()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        with pytest.raises(BackupFailed) as err:
            await run_check()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)
    assert err.value.message.startswith("The backup repository is locked by another restic process")
    assert f"process {holder.pid} on " in err.value.message
    assert (await runs("check"))[-1]["status"] == "failed"
    assert (await run_check())["subset"].endswith("/5"), "works once the lock is gone"


# --- jobs, admin page and banner -------------------------------------------------------------


def test_backup_jobs_are_scheduled_only_when_configured(runtime: Any, monkeypatch: Any) -> None:
    from core.jobs.scheduler import build_schedule

    names = {job.name for job in build_schedule(runtime)}
    assert "core.backup" not in names and "core.task_reminders" in names
    monkeypatch.setattr(
        runtime,
        "settings",
        dataclasses.replace(
            runtime.settings, backup_repository="/srv/backups", backup_schedule="15 1 * * *"
        ),
    )
    jobs = {job.name: job for job in build_schedule(runtime)}
    assert jobs["core.backup"].cron == "15 1 * * *"
    assert jobs["core.backup_check"].cron == "0 4 * * 0"


async def test_admin_page_backs_up_now_and_shows_status_and_snapshots(
    as_admin: Any, backups_on: Any, runtime: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    from core.backup.jobs import back_up_and_verify

    page = await as_admin.get("/admin/backups")
    assert page.status_code == 200
    assert "No good backup in the last 26 hours." in page.text
    assert 'hx-get="/admin/backups/snapshots"' in page.text

    queued = await post(as_admin, "/admin/backups/run", follow_redirects=False)
    assert queued.status_code == 303
    [run] = await runs("backup")
    assert run["status"] == "running" and '"queued"' in run["details"]
    waiting = await as_admin.get("/admin/backups/runs", headers={"hx-request": "true"})
    assert 'hx-trigger="every 2s"' in waiting.text and "waiting for the job worker" in waiting.text
    again = await post(as_admin, "/admin/backups/run")
    assert again.status_code == 409 and "already running" in again.text

    await back_up_and_verify("manual", run["id"])  # what the worker does
    done = await as_admin.get("/admin/backups/runs", headers={"hx-request": "true"})
    assert done.headers.get("hx-refresh") == "true", "the page reloads when the run is over"
    [backup] = await runs("backup")
    assert backup["id"] == run["id"] and backup["status"] == "ok"
    assert (await runs("verify"))[-1]["status"] == "ok", "the job proved the backup"

    page = await as_admin.get("/admin/backups")
    assert 'id="backup-ok"' in page.text
    assert backup["snapshot_id"][:8] in page.text
    assert "Last verified restore" in page.text and "Repository" in page.text
    snapshots = await as_admin.get("/admin/backups/snapshots")
    assert f'id="snapshot-{backup["snapshot_id"][:8]}"' in snapshots.text
    assert "restored and checked" in snapshots.text

    monkeypatch.setattr(
        runtime,
        "settings",
        dataclasses.replace(backups_on, backup_repository=str(tmp_path / "gone")),
    )
    broken = await as_admin.get("/admin/backups/snapshots")
    assert 'id="backup-repository-error"' in broken.text
    assert "There is no backup repository at" in broken.text


async def test_banner_for_those_who_can_act(as_admin: Any, backups_on: Any) -> None:
    home = await as_admin.get("/")
    assert 'hx-get="/admin/backups/banner"' in home.text
    banner = await as_admin.get("/admin/backups/banner")
    assert 'class="backup-banner"' in banner.text
    assert "No good backup in the last 26 hours." in banner.text


async def test_no_banner_when_backups_are_not_configured(as_admin: Any) -> None:
    assert (await as_admin.get("/admin/backups/banner")).text == ""
    page = await as_admin.get("/admin/backups")
    assert 'id="backup-not-configured"' in page.text


async def test_no_banner_for_managers(as_manager: Any, backups_on: Any) -> None:
    home = await as_manager.get("/")
    assert home.status_code == 200 and "/admin/backups/banner" not in home.text
    assert (await as_manager.get("/admin/backups/banner")).status_code == 403
    assert (await as_manager.get("/admin/backups")).status_code == 403
    assert (await post(as_manager, "/admin/backups/run")).status_code == 403


# --- restore end to end ---------------------------------------------------------------------


class _Recordings:
    """A plugin's ``backup_items``: a folder of call recordings."""

    def __init__(self, path: Path) -> None:
        self.path = path

    from core.hookspecs import hookimpl

    @hookimpl
    def backup_items(self) -> list[Any]:
        from core.hooktypes import BackupItem

        return [BackupItem(name="recordings", path=self.path)]


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(SERVER_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def own_install(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: Any, runtime: Any
) -> Iterator[dict[str, Any]]:
    """An install of its own (data dir, database, repository) that the test may destroy."""
    from core import runtime as runtime_module
    from core.db import bind_tables
    from core.runtime import build_runtime
    from core.settings import reload_settings

    engine = request.param
    if engine == "postgresql" and not SERVER_URL:
        pytest.skip("the PostgreSQL restore runs in the server-mode suite (make test-server)")
    database_url, scratch = "", ""
    if engine == "postgresql":
        scratch = f"{dbtools.pg_database(SERVER_URL)}_backup_e2e"
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{scratch}"'))
        asyncio.run(_pg_admin(f'CREATE DATABASE "{scratch}"'))
        database_url = dbtools.pg_url_for(SERVER_URL, scratch)
    password = tmp_path / "password"
    password.write_text(PASSWORD)
    monkeypatch.setenv("KARTOTEKA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("KARTOTEKA_BACKUP_REPOSITORY", str(tmp_path / "repo"))
    monkeypatch.setenv("KARTOTEKA_BACKUP_PASSWORD_FILE", str(password))
    previous = runtime_module._current
    own = build_runtime(reload_settings(), extra_plugin_packages=(TEST_PLUGIN_PACKAGE,))
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    (recordings / "call-1.wav").write_bytes(b"RIFF" + os.urandom(2000))
    own.plugins.pm.register(_Recordings(recordings))
    runtime_module.set_runtime(own)
    try:
        yield {"runtime": own, "recordings": recordings, "engine": engine}
    finally:
        monkeypatch.undo()
        reload_settings()
        runtime_module.set_runtime(previous)
        bind_tables()
        if scratch:
            asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{scratch}"'))
            asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{scratch}_verify"'))


async def _create_data() -> None:
    from core.services import attachments, clients, deals, users

    manager = await users.create_user("olga", "Olga Manager", "olga-password", role="manager")
    uid = manager["id"]
    for n, name in enumerate(["ООО «Ромашка»", "ИП Петров", "АО «Вектор»"]):
        client_id = await clients.create_client(
            {"name": name, "responsible": uid, "phones": f"+7 912 345-67-0{n}"}, uid
        )
        await clients.add_note(client_id, f"Позвонить в {n + 10}:00", uid)
        deal_id = await deals.create_deal(
            {"title": f"Поставка {n}", "amount": f"{1000 * (n + 1)}", "client": client_id}, uid
        )

        async def chunks(seed: int = n) -> AsyncIterator[bytes]:
            yield f"договор {seed}".encode() + os.urandom(3000)

        await attachments.store(
            client_id, deal_id, f"Договор {n}.pdf", "application/pdf", chunks(), uid
        )


async def _snapshot_of_data(data_dir: Path) -> dict[str, Any]:
    from core.tables import Attachment, Client, ContactPoint, Deal, TimelineEntry, User

    files = {}
    for row in await Attachment.select(Attachment.storage_key, Attachment.sha256):
        path = data_dir / "attachments" / row["storage_key"]
        files[row["storage_key"]] = (
            hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
        )
    return {
        "clients": await Client.select().order_by(Client.id),
        "points": await ContactPoint.select().order_by(ContactPoint.id),
        "deals": await Deal.select().order_by(Deal.id),
        "timeline": await TimelineEntry.select().order_by(TimelineEntry.id),
        "users": await User.select(User.id, User.username, User.password_hash).order_by(User.id),
        "attachments": await Attachment.select().order_by(Attachment.id),
        "files": files,
    }


async def _add_newer_client() -> None:
    from core.services import clients
    from core.tables import User

    olga = await User.select(User.id).where(User.username == "olga").first()
    await clients.create_client(
        {"name": "ООО «Новее бэкапа»", "responsible": olga["id"]}, olga["id"]
    )


async def _destroy_database(settings: Any) -> None:
    if settings.is_sqlite:
        for suffix in ("", "-wal", "-shm"):
            settings.sqlite_path.with_name(settings.sqlite_path.name + suffix).unlink(
                missing_ok=True
            )
        return
    import asyncpg

    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    finally:
        await conn.close()


@pytest.mark.slow
def test_restore_end_to_end(
    own_install: dict[str, Any], monkeypatch: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Create data, back up, destroy the database and a file, restore: all is back."""
    from core import cli, maintenance

    settings = own_install["runtime"].settings
    assert cli.main(["migrate"]) == 0
    asyncio.run(_create_data())
    before = asyncio.run(_snapshot_of_data(settings.data_dir))
    assert len(before["clients"]) == 3 and all(before["files"].values())

    assert cli.main(["backup", "now"]) == 0
    out = capsys.readouterr().out
    assert "initialised the backup repository" in out
    assert "verified: backup" in out and "migrations and row counts match" in out

    asyncio.run(_destroy_database(settings))
    first_file = settings.attachments_dir / before["attachments"][0]["storage_key"]
    first_file.unlink()
    (own_install["recordings"] / "call-1.wav").unlink()

    monkeypatch.setattr("builtins.input", lambda prompt: "yes please")
    assert cli.main(["backup", "restore", "latest"]) == 2, "refused without the snapshot id"
    assert "not confirmed: nothing was changed" in capsys.readouterr().err
    assert maintenance.current() is None and not first_file.exists()

    def no_terminal(prompt: str) -> str:
        raise EOFError

    monkeypatch.setattr("builtins.input", no_terminal)
    assert cli.main(["backup", "restore", "latest"]) == 2

    assert cli.main(["backup", "restore", "latest", "--yes"]) == 0
    out = capsys.readouterr().out
    assert "restored backup" in out
    assert maintenance.current() is None

    after = asyncio.run(_snapshot_of_data(settings.data_dir))
    assert after == before
    assert (own_install["recordings"] / "call-1.wav").exists(), "the plugin's items are back"

    from core.tables import AuditEntry

    async def records() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        restores = await BackupRun.select().where(BackupRun.kind == "restore")
        audit = await AuditEntry.select().where(AuditEntry.action == "backup.restore")
        return restores, audit

    restores, audit = asyncio.run(records())
    assert [r["status"] for r in restores] == ["ok"]
    assert audit and audit[0]["actor_name"].startswith("cli:")
    if own_install["engine"] == "postgresql":
        kept = settings.data_dir / "safety"
        assert [p.suffix for p in kept.glob("*.pgdump")] == [".pgdump"], out
        assert "to undo: kartoteka backup put-back" in out

    # A restore failing half-way stays in maintenance and tells how to go back.
    asyncio.run(_add_newer_client())
    newer = asyncio.run(_snapshot_of_data(settings.data_dir))

    def disk_full(restored: Path, live: Path, aside: Path) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as broken:
        broken.setattr(dbtools, "move_into_place", disk_full)
        assert cli.main(["backup", "restore", "latest", "--yes"]) == 2
    error = capsys.readouterr().err
    state = maintenance.current()
    assert state is not None and state["reason"] in error
    assert "failed half-way: No space left on a disk" in state["reason"]
    match = re.search(r"kartoteka backup put-back (\S+)", state["reason"])
    assert match, state["reason"]
    assert cli.main(["backup", "put-back", match.group(1), "--yes"]) == 0
    assert maintenance.current() is None
    assert asyncio.run(_snapshot_of_data(settings.data_dir)) == newer, "as before the restore"
