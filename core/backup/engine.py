"""Backing up, proving that the latest backup restores, checking the repository.

A backup is a *set* of restic snapshots sharing a ``set-…`` tag: the *files* snapshot
(manifest.json, the settings file, the attachments, what plugins add and, for SQLite,
the database copy) and, for PostgreSQL, a *pgdump* snapshot made first. The files
snapshot is written last, so a set is complete exactly when it exists; its id is the
one the admin page and ``kartoteka backup restore`` show.

Every run is a ``core_backup_run`` row, which the admin page, the banner and /readyz
read. Runs of one install never overlap: a lock file in the data dir makes sure.
Blocking work (restic, pg_dump, the SQLite copy) runs in threads, so the job worker's
event loop stays free.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from datetime import timedelta
from pathlib import Path
from typing import Any

from core import __version__, i18n
from core.backup import database as db
from core.backup.restic import FILES_TAG, PGDUMP_TAG, TAG, Restic, ResticError
from core.i18n import _
from core.runtime import get_runtime
from core.services.common import as_utc, utcnow, write
from core.settings import Settings
from core.tables import BackupRun

log = logging.getLogger(__name__)

STAGING = "kartoteka-backup"
"""Folder in the data dir holding what a backup adds besides existing files; its
absolute path is in every files snapshot, which is how a snapshot's manifest is found."""
MANIFEST = "manifest.json"
SETTINGS_COPY = "kartoteka.toml"
LOCK_FILE = "backup.lock"
QUEUED_PATIENCE = timedelta(days=1)
"""How long a run queued from the admin page may wait for a job worker."""
BACKUPS_PERMISSION = "core.backups"
KEPT_TRIGGERS = ("pre-upgrade",)
"""Backups that retention never removes: the way back from an upgrade outlives the nightly ones."""


class BackupFailed(Exception):
    """A run failed; it is recorded, and the message is the one the admin page shows."""

    def __init__(self, message: str, run_id: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.run_id = run_id


def message_of(exc: BaseException) -> str:
    if isinstance(exc, ResticError | BackupFailed):
        return exc.message
    if isinstance(exc, db.DatabaseError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno == 28:
        return _(
            "No space left on a disk (the backup repository's or this server's): free some "
            "space, then run the backup again."
        )
    return _("Unexpected error: %(error)s", error=f"{type(exc).__name__}: {exc}")


def _loads(value: Any, default: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value) if value else default
        except ValueError:
            return default
    return value if value is not None else default


# --- one run at a time ----------------------------------------------------------------


@contextmanager
def exclusive(settings: Settings) -> Iterator[None]:
    """Hold the install's backup lock (backups, verifications, checks and restores)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(settings.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise BackupFailed(
            _(
                "Another backup, verification, check or restore is running; try again when it "
                "has finished."
            )
        ) from None
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# --- the run rows -------------------------------------------------------------------------


class Run:
    """The ``core_backup_run`` row of the run in progress."""

    def __init__(self, run_id: int, kind: str, details: dict[str, Any]) -> None:
        self.id = run_id
        self.kind = kind
        self.details = details
        self.snapshot_id = ""
        self.started = time.monotonic()

    @classmethod
    async def start(cls, kind: str, run_id: int | None = None, **details: Any) -> Run:
        """Take over the row queued from the admin page, or add one."""
        details = {"step": "starting", **details}
        now = utcnow()
        async with write():
            if run_id is not None:
                taken = (
                    await BackupRun.update(
                        {
                            BackupRun.started_at: now,
                            BackupRun.details: json.dumps(details),
                        }
                    )
                    .where(
                        (BackupRun.id == run_id)
                        & (BackupRun.kind == kind)
                        & (BackupRun.status == "running")
                    )
                    .returning(BackupRun.id)
                )
                if taken:
                    return cls(run_id, kind, details)
            rows = await BackupRun.insert(
                BackupRun(kind=kind, status="running", started_at=now, details=json.dumps(details))
            ).returning(BackupRun.id)
        return cls(int(rows[0]["id"]), kind, details)

    async def _save(self, **values: Any) -> None:
        changes = {getattr(BackupRun, key): value for key, value in values.items()}
        changes[BackupRun.details] = json.dumps(self.details)
        async with write():
            await BackupRun.update(changes).where(BackupRun.id == self.id)

    async def step(self, name: str) -> None:
        self.details["step"] = name
        await self._save()

    async def finish(self, status: str, message: str = "", size: int = 0) -> None:
        self.details["step"] = "done"
        self.details["seconds"] = round(time.monotonic() - self.started, 3)
        await self._save(
            status=status,
            message=message,
            finished_at=utcnow(),
            snapshot_id=self.snapshot_id,
            size_bytes=size,
        )


async def queue_run(kind: str, trigger: str = "manual") -> int:
    """A run row shown at once ("waiting for the job worker") for a job about to be sent."""
    async with write():
        rows = await BackupRun.insert(
            BackupRun(
                kind=kind,
                status="running",
                started_at=utcnow(),
                details=json.dumps({"step": "queued", "trigger": trigger}),
            )
        ).returning(BackupRun.id)
    return int(rows[0]["id"])


async def close_stale_runs(keep: int | None = None) -> None:
    """Runs still "running" while we hold the lock were cut short (a crash, a restart);
    queued ones may still be waiting for a worker, for a while."""
    rows = await BackupRun.select(BackupRun.id, BackupRun.started_at, BackupRun.details).where(
        BackupRun.status == "running"
    )
    now = utcnow()
    for row in rows:
        if row["id"] == keep:
            continue
        queued = _loads(row["details"], {}).get("step") == "queued"
        if queued and now - as_utc(row["started_at"]) < QUEUED_PATIENCE:
            continue
        message = (
            _("Never started: is the job worker running?")
            if queued
            else _("Interrupted: the process running it stopped before it finished.")
        )
        async with write():
            await BackupRun.update(
                {BackupRun.status: "failed", BackupRun.message: message, BackupRun.finished_at: now}
            ).where((BackupRun.id == row["id"]) & (BackupRun.status == "running"))


async def fail_queued(run_id: int | None, message: str) -> None:
    if run_id is None:
        return
    async with write():
        await BackupRun.update(
            {
                BackupRun.status: "failed",
                BackupRun.message: message,
                BackupRun.finished_at: utcnow(),
            }
        ).where((BackupRun.id == run_id) & (BackupRun.status == "running"))


async def running_runs() -> list[dict[str, Any]]:
    rows = (
        await BackupRun.select()
        .where(BackupRun.status == "running")
        .order_by(BackupRun.id, ascending=False)
    )
    return [loaded_run(row) for row in rows]


async def recent_runs(limit: int = 20) -> list[dict[str, Any]]:
    rows = await BackupRun.select().order_by(BackupRun.id, ascending=False).limit(limit)
    return [loaded_run(row) for row in rows]


async def repository_info() -> dict[str, Any] | None:
    """The repository's size as measured after the latest successful backup."""
    rows = (
        await BackupRun.select(BackupRun.details)
        .where((BackupRun.kind == "backup") & (BackupRun.status == "ok"))
        .order_by(BackupRun.id, ascending=False)
        .limit(5)
    )
    for row in rows:
        info = _loads(row["details"], {}).get("repository")
        if info:
            return dict(info)
    return None


def loaded_run(row: dict[str, Any]) -> dict[str, Any]:
    """A ``core_backup_run`` row with its details parsed and its times in UTC."""
    row["details"] = _loads(row.get("details"), {})
    for key in ("started_at", "finished_at"):
        row[key] = as_utc(row.get(key))
    return row


# --- alerts -------------------------------------------------------------------------------


async def alert(run_kind: str, message: str) -> int:
    """Notify every active user whose role may manage backups; returns how many."""
    from core.services.notifications import notify
    from core.tables import Role, User

    roles = await Role.select(Role.code, Role.permissions)
    codes = [
        role["code"]
        for role in roles
        if role["code"] == "admin" or BACKUPS_PERMISSION in _loads(role["permissions"], [])
    ]
    if not codes:
        return 0
    people = await User.select(User.id, User.locale).where(
        User.role.is_in(codes) & User.active.eq(True)
    )
    default_locale = get_runtime().settings.default_locale
    for person in people:
        token = i18n.current_locale.set(person["locale"] or default_locale)
        try:
            kinds = {
                "backup": _("The backup failed"),
                "verify": _("The test restore of the latest backup failed"),
                "check": _("The backup repository check failed"),
            }
            fallback = _("A backup job failed")
            text = f"{kinds.get(run_kind, fallback)}: {message}"
        finally:
            i18n.current_locale.reset(token)
        await notify(person["id"], "backup", text, "/admin/backups")
    return len(people)


async def _record_failure(run: Run, exc: BaseException) -> str:
    message = message_of(exc)
    if not isinstance(exc, ResticError | BackupFailed | db.DatabaseError):
        log.exception("backup %s run %s failed", run.kind, run.id)
    await run.finish("failed", message)
    await alert(run.kind, message)
    return message


# --- backing up -------------------------------------------------------------------------


def _timed(timings: dict[str, float], name: str, since: float) -> float:
    now = time.monotonic()
    timings[name] = round(now - since, 3)
    return now


def plugin_items() -> list[Any]:
    """What enabled plugins want backed up (``backup_items`` hook)."""
    return list(get_runtime().plugins.collect("backup_items"))


def _set_tag(snapshot: dict[str, Any]) -> str:
    return next((tag for tag in snapshot.get("tags") or [] if tag.startswith("set-")), "")


def _trigger(snapshot: dict[str, Any]) -> str:
    skip = {TAG, FILES_TAG, PGDUMP_TAG}
    return next(
        (t for t in snapshot.get("tags") or [] if t not in skip and not t.startswith("set-")), ""
    )


Work = Callable[[Run, Restic, Settings], Awaitable[dict[str, Any]]]


async def _locked_run(kind: str, run_id: int | None, work: Work, **details: Any) -> dict[str, Any]:
    """Run ``work`` under the install's lock as a recorded run of ``kind``."""
    settings = get_runtime().settings
    restic = Restic.from_settings(settings)
    with ExitStack() as stack:
        try:
            stack.enter_context(exclusive(settings))
        except BackupFailed as exc:
            await fail_queued(run_id, exc.message)
            raise
        await close_stale_runs(keep=run_id)
        run = await Run.start(kind, run_id, **details)
        try:
            return await work(run, restic, settings)
        except Exception as exc:
            raise BackupFailed(await _record_failure(run, exc), run.id) from exc


async def run_backup(trigger: str = "manual", run_id: int | None = None) -> dict[str, Any]:
    """Back up the install, then apply retention; returns what happened and its timings.

    ``trigger`` tags the snapshot (``scheduled``, ``manual``, ``pre-upgrade``…). Raises
    `BackupFailed` (after recording the run and alerting) when anything fails.
    """

    async def work(run: Run, restic: Restic, settings: Settings) -> dict[str, Any]:
        return await _backup(run, restic, settings, trigger or "manual")

    return await _locked_run("backup", run_id, work, trigger=trigger)


async def _backup(run: Run, restic: Restic, settings: Settings, trigger: str) -> dict[str, Any]:
    timings: dict[str, float] = {}
    started = mark = time.monotonic()
    run.details["restic_version"] = str(await asyncio.to_thread(lambda: restic.version))
    await run.step("repository")
    run.details["initialised"] = await asyncio.to_thread(restic.ensure_repository)
    mark = _timed(timings, "repository", mark)

    set_tag = f"set-{utcnow():%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
    tags = [TAG, trigger, set_tag]
    staging = settings.data_dir / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    manifest: dict[str, Any] = {
        "format": 1,
        "kartoteka_version": __version__,
        "created_at": utcnow().isoformat(),
        "database": "sqlite" if settings.is_sqlite else "postgresql",
        "plugins": list(get_runtime().plugins.names),
        "set": set_tag,
        "run_id": run.id,
        "trigger": trigger,
    }
    total_bytes = data_added = 0
    dump_id = ""
    try:
        await run.step("database")
        if settings.is_sqlite:
            copy = staging / db.SQLITE_NAME
            await asyncio.to_thread(db.sqlite_copy, settings.sqlite_path, copy)
            facts = await asyncio.to_thread(db.sqlite_facts, copy)
        else:
            facts, dump = await _pg_backup(restic, settings.database_url, tags)
            dump_id = manifest["pgdump_snapshot"] = str(dump.get("snapshot_id") or "")
            total_bytes += int(dump.get("total_bytes_processed") or 0)
            data_added += int(dump.get("data_added") or 0)
        manifest.update(facts)
        mark = _timed(timings, "database", mark)

        await run.step("files")
        paths: list[Path] = [staging]
        settings_copy = ""
        if settings.settings_file.exists():
            shutil.copy2(settings.settings_file, staging / SETTINGS_COPY)
            settings_copy = SETTINGS_COPY
        settings.attachments_dir.mkdir(parents=True, exist_ok=True)
        paths.append(settings.attachments_dir)
        items: dict[str, str] = {}
        skipped: list[str] = []
        for item in plugin_items():
            path = Path(item.path)
            if path.exists():
                items[item.name] = str(path)
                paths.append(path)
            else:
                skipped.append(f"{item.name}: {path}")
        if skipped:
            run.details["skipped_items"] = skipped
        manifest["paths"] = {
            "staging": str(staging),
            "attachments": str(settings.attachments_dir),
            "settings": settings_copy,
            "items": items,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        summary = await asyncio.to_thread(restic.backup, paths, [*tags, FILES_TAG])
        total_bytes += int(summary.get("total_bytes_processed") or 0)
        data_added += int(summary.get("data_added") or 0)
        run.snapshot_id = str(summary.get("snapshot_id") or "")
        mark = _timed(timings, "files", mark)
    except Exception:
        if dump_id:  # a dump without its files snapshot is not a backup: do not keep it
            with suppress(ResticError):
                await asyncio.to_thread(restic.forget, [dump_id])
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    await run.step("retention")
    try:
        retention = await asyncio.to_thread(_retention, restic, settings)
    except ResticError as exc:
        retention = {"error": exc.message}
    snapshots = retention.pop("snapshots", None)
    run.details["retention"] = retention
    mark = _timed(timings, "retention", mark)

    await run.step("stats")
    try:
        if snapshots is None:
            snapshots = await asyncio.to_thread(restic.snapshots, [TAG])
        mine = [s["id"] for s in snapshots if _set_tag(s) == set_tag and FILES_TAG in s["tags"]]
        run.snapshot_id = mine[0] if mine else run.snapshot_id  # restic 0.14 gave a short id
        stats = await asyncio.to_thread(restic.stats)
        run.details["repository"] = {
            "size": int(stats.get("total_size") or 0),
            "backups": len(backup_sets(snapshots)),
            "measured_at": utcnow().isoformat(),
        }
    except ResticError as exc:  # the backup itself is saved; the size shows next time
        log.warning("measuring the backup repository failed: %s", exc.message)
    _timed(timings, "stats", mark)
    timings["total"] = round(time.monotonic() - started, 3)
    run.details.update(timings=timings, data_added=data_added, set=set_tag)
    warning = ""
    if "error" in retention:
        warning = _(
            "The backup was saved, but removing old backups failed: %(error)s",
            error=retention["error"],
        )
    await run.finish("ok", warning, size=total_bytes)
    if warning:
        await alert("backup", warning)
    return {
        "run_id": run.id,
        "snapshot_id": run.snapshot_id,
        "size_bytes": total_bytes,
        "data_added": data_added,
        "seconds": timings,
        "warning": warning,
        "initialised": run.details["initialised"],
    }


async def _pg_backup(restic: Restic, url: str, tags: list[str]) -> tuple[db.Facts, dict[str, Any]]:
    """Count and dump inside one exported snapshot: the facts describe exactly the dump."""
    import asyncpg

    try:
        conn = await asyncpg.connect(url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise db.DatabaseError(_("Cannot connect to the database: %(reason)s", reason=exc)) from exc
    try:
        transaction = conn.transaction(isolation="repeatable_read", readonly=True)
        await transaction.start()
        try:
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            facts = await db.pg_facts(conn)
            dump = await asyncio.to_thread(
                db.pg_dump_to_restic, restic, url, snapshot, [*tags, PGDUMP_TAG]
            )
        finally:
            await transaction.rollback()
    finally:
        await conn.close()
    return facts, dump


def _retention(restic: Restic, settings: Settings) -> dict[str, Any]:
    """The keep-policy on complete sets; a pgdump whose set is gone goes with it."""
    keep = (settings.backup_keep_daily, settings.backup_keep_weekly, settings.backup_keep_monthly)
    if not any(value > 0 for value in keep):
        return {"skipped": True}
    groups = restic.forget_policy([TAG, FILES_TAG], *keep, keep_tags=KEPT_TRIGGERS)
    removed = [snap["id"] for group in groups for snap in group.get("remove") or []]
    snapshots = restic.snapshots([TAG])
    complete = {_set_tag(s) for s in snapshots if FILES_TAG in (s.get("tags") or [])}
    orphans = [
        s["id"]
        for s in snapshots
        if PGDUMP_TAG in (s.get("tags") or []) and _set_tag(s) not in complete
    ]
    restic.forget(orphans)
    if removed or orphans:
        restic.prune()
        snapshots = [s for s in snapshots if s["id"] not in orphans]
    return {"removed": len(removed), "orphans": len(orphans), "snapshots": snapshots}


# --- snapshots and manifests ------------------------------------------------------------


def backup_sets(snapshots: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Complete backups, newest first: each files snapshot with its set's pgdump, if any."""
    dumps = {_set_tag(s): s for s in snapshots if PGDUMP_TAG in (s.get("tags") or [])}
    sets = []
    for snap in snapshots:
        if FILES_TAG not in (snap.get("tags") or []):
            continue
        sets.append(
            {
                "id": snap["id"],
                "short_id": snap.get("short_id") or snap["id"][:8],
                "time": snap.get("time", ""),
                "trigger": _trigger(snap),
                "paths": snap.get("paths") or [],
                "dump": dumps.get(_set_tag(snap)),
            }
        )
    return sorted(sets, key=lambda s: s["time"], reverse=True)


def list_backups(restic: Restic | None = None) -> list[dict[str, Any]]:
    """The repository's complete backups, newest first (asks restic: blocking)."""
    restic = restic or Restic.from_settings(get_runtime().settings)
    return backup_sets(restic.snapshots([TAG]))


def manifest_path(backup: dict[str, Any]) -> str:
    for path in backup["paths"]:
        if Path(path).name == STAGING:
            return f"{path}/{MANIFEST}"
    raise BackupFailed(_("Snapshot %(id)s is not a Kartoteka backup.", id=backup["short_id"]))


def read_manifest(restic: Restic, backup: dict[str, Any]) -> dict[str, Any]:
    raw = restic.dump_bytes(backup["id"], manifest_path(backup))
    try:
        return dict(json.loads(raw))
    except ValueError as exc:
        raise BackupFailed(
            _("The manifest of snapshot %(id)s is damaged.", id=backup["short_id"])
        ) from exc


def find_backup(restic: Restic, snapshot: str) -> dict[str, Any]:
    """A complete backup by (a prefix of) either of its snapshot ids, or ``latest``."""
    backups = list_backups(restic)
    if snapshot == "latest" and backups:
        return backups[0]
    for backup in backups:
        ids = [backup["id"], (backup["dump"] or {}).get("id", "")]
        if any(i and i.startswith(snapshot) for i in ids):
            return backup
    raise BackupFailed(
        _("There is no Kartoteka backup with snapshot id %(id)s in the repository.", id=snapshot)
    )


# --- proving the latest backup restores -----------------------------------------------


async def verify_latest(run_id: int | None = None) -> dict[str, Any]:
    """Restore the newest backup into a scratch database and compare it with its manifest."""
    return await _locked_run("verify", run_id, _verify)


async def _verify(run: Run, restic: Restic, settings: Settings) -> dict[str, Any]:
    timings: dict[str, float] = {}
    started = mark = time.monotonic()
    await run.step("reading")
    backups = await asyncio.to_thread(list_backups, restic)
    if not backups:
        raise BackupFailed(_("There is no backup to verify yet."))
    backup = backups[0]
    run.snapshot_id = backup["id"]
    manifest = await asyncio.to_thread(read_manifest, restic, backup)
    mark = _timed(timings, "manifest", mark)
    await run.step("restoring")
    facts, restore_seconds = await restore_database_scratch(restic, settings, backup, manifest)
    timings["restore"] = restore_seconds
    mark = time.monotonic()
    problems = db.compare(manifest, facts)
    _timed(timings, "compare", mark)
    if problems:
        raise BackupFailed(
            _(
                "The test restore of backup %(id)s does not match what was backed up: %(problems)s",
                id=backup["short_id"],
                problems=" ".join(problems),
            )
        )
    timings["total"] = round(time.monotonic() - started, 3)
    run.details.update(
        timings=timings,
        counts=facts["counts"],
        backup_time=backup["time"],
        kartoteka_version=manifest.get("kartoteka_version", ""),
    )
    await run.finish("ok")
    return {"run_id": run.id, "snapshot_id": backup["id"], "seconds": timings, **facts}


async def restore_database_scratch(
    restic: Restic, settings: Settings, backup: dict[str, Any], manifest: dict[str, Any]
) -> tuple[db.Facts, float]:
    """Restore a backup's database somewhere harmless and read its facts."""
    mark = time.monotonic()
    if manifest.get("database") == "sqlite":
        scratch = settings.data_dir / "verify-scratch"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        try:
            target = scratch / db.SQLITE_NAME
            source = f"{manifest['paths']['staging']}/{db.SQLITE_NAME}"
            await asyncio.to_thread(restic.dump_to_file, backup["id"], source, target)
            facts = await asyncio.to_thread(db.sqlite_facts, target, True)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return facts, round(time.monotonic() - mark, 3)
    if settings.is_sqlite:
        raise BackupFailed(_("This is a PostgreSQL backup; testing it needs a PostgreSQL server."))
    if not backup["dump"]:
        raise BackupFailed(
            _("The database dump of backup %(id)s is missing.", id=backup["short_id"])
        )
    url = settings.database_url
    scratch_name = f"{db.pg_database(url)}_verify"
    await db.pg_create_scratch(url, scratch_name)
    try:
        scratch_url = db.pg_url_for(url, scratch_name)
        await asyncio.to_thread(
            db.pg_load, scratch_url, restic=restic, snapshot_id=backup["dump"]["id"]
        )
        facts = await db.pg_facts_of(scratch_url)
    finally:
        await db.pg_drop_scratch(url, scratch_name)
    return facts, round(time.monotonic() - mark, 3)


# --- checking the repository -------------------------------------------------------------


def check_subset(now: Any = None) -> str:
    """A different fifth of the data each week (``n/t`` works on restic 0.14 and newer)."""
    week = (now or utcnow()).isocalendar()[1]
    return f"{week % 5 + 1}/5"


async def run_check(run_id: int | None = None) -> dict[str, Any]:
    """``restic check`` reading a rotating fifth of the stored data."""
    return await _locked_run("check", run_id, _check)


async def _check(run: Run, restic: Restic, settings: Settings) -> dict[str, Any]:
    subset = check_subset()
    await run.step("checking")
    report = await asyncio.to_thread(restic.check, subset)
    run.details.update(subset=subset, report=report)
    await run.finish("ok")
    return {"run_id": run.id, "subset": subset, "seconds": run.details["seconds"]}
