"""Restoring a backup over the live install, and putting the safety copy back.

A restore stops writers first (maintenance mode: every page answers 503), keeps a
safety copy of the current database (and moves the current attachments and settings
aside), proves the restored database against the backup's manifest, and only then
leaves maintenance. If anything fails after the live data was touched, Kartoteka stays
in maintenance, and the reason says how to put the safety copy back
(``kartoteka backup put-back``).

PostgreSQL is restored in one transaction that drops and recreates the public schema
and loads the dump (see `database.pg_load`): all or nothing, and tables created after
the backup do not linger to trip the next migration.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from core import maintenance
from core.backup import database as db
from core.backup.engine import (
    BackupFailed,
    exclusive,
    find_backup,
    message_of,
    plugin_items,
    read_manifest,
)
from core.backup.restic import Restic
from core.i18n import _
from core.runtime import get_runtime
from core.services.common import as_utc, utcnow, write
from core.settings import Settings
from core.tables import BackupRun

SAFETY_DIR = "safety"


def _nothing(line: str) -> None:
    return None


def describe(snapshot: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The backup a snapshot id (or ``latest``) names and its manifest (blocking)."""
    restic = Restic.from_settings(get_runtime().settings)
    backup = find_backup(restic, snapshot)
    return backup, read_manifest(restic, backup)


def _kind(settings: Settings) -> str:
    return "sqlite" if settings.is_sqlite else "postgresql"


def _stamp() -> str:
    """Names one restore's safety set: ``<stamp>.sqlite3``, ``<stamp>-attachments``…"""
    return utcnow().strftime("%Y%m%d-%H%M%S-%f")[:-3]


async def _saved_runs(settings: Settings) -> list[dict[str, Any]] | None:
    """The run history as it is now, to carry over the restore (None: unreadable)."""
    if settings.is_sqlite and not settings.sqlite_path.exists():
        return None
    try:
        return list(await BackupRun.select().order_by(BackupRun.id))
    except Exception:  # a damaged or missing database is why people restore
        return None


async def _carry_over_runs(
    history: list[dict[str, Any]] | None, manifest: dict[str, Any], backup: dict[str, Any]
) -> None:
    """After the restore the run table is the backup's; put the newer history back, or
    else close what the copy caught mid-way (its own backup run among them)."""
    now = utcnow()
    async with write():
        if history is not None:
            await BackupRun.delete(force=True)
            if history:
                await BackupRun.insert(
                    *[
                        BackupRun(
                            **{
                                **{k: v for k, v in row.items() if k != "id"},
                                "started_at": as_utc(row["started_at"]),
                                "finished_at": as_utc(row["finished_at"]),
                            }
                        )
                        for row in history
                    ]
                )
            return
        taken_at = datetime.fromisoformat(manifest["created_at"])
        await BackupRun.update(
            {
                BackupRun.status: "ok",
                BackupRun.finished_at: taken_at,
                BackupRun.snapshot_id: backup["id"],
            }
        ).where((BackupRun.id == manifest.get("run_id", 0)) & (BackupRun.status == "running"))
        await BackupRun.update(
            {
                BackupRun.status: "failed",
                BackupRun.finished_at: now,
                BackupRun.message: _(
                    "Interrupted: the process running it stopped before it finished."
                ),
            }
        ).where(BackupRun.status == "running")


async def _record(kind: str, status: str, started: datetime, **fields: Any) -> None:
    async with write():
        await BackupRun.insert(
            BackupRun(
                kind=kind,
                status=status,
                started_at=started,
                finished_at=utcnow(),
                **fields,
            )
        )


async def _record_failure_quietly(started: datetime, snapshot_id: str, message: str) -> None:
    """Into whatever database is there now; it may be the broken one."""
    try:
        await _record("restore", "failed", started, snapshot_id=snapshot_id, message=message)
    except Exception:
        return


async def _safety_copy(settings: Settings, folder: Path, stamp: str) -> Path | None:
    folder.mkdir(parents=True, exist_ok=True)
    if settings.is_sqlite:
        live = settings.sqlite_path
        if not live.exists():
            return None
        target = folder / f"{stamp}.sqlite3"
        try:
            await asyncio.to_thread(db.sqlite_copy, live, target)
        except db.DatabaseError:  # too damaged to read: keep the bytes as they are
            await asyncio.to_thread(db.sqlite_raw_copy, live, target)
        return target
    target = folder / f"{stamp}.pgdump"
    await asyncio.to_thread(db.pg_dump_to_file, settings.database_url, target)
    return target


async def restore_backup(
    backup: dict[str, Any],
    manifest: dict[str, Any],
    progress: Callable[[str], None] = _nothing,
) -> dict[str, Any]:
    """Replace the database, attachments, settings and plugin items with a backup's."""
    settings = get_runtime().settings
    restic = Restic.from_settings(settings)
    if manifest.get("database") != _kind(settings):
        raise BackupFailed(
            _(
                "Backup %(id)s holds a %(theirs)s database, this install uses %(ours)s: "
                "it cannot be restored here.",
                id=backup["short_id"],
                theirs=manifest.get("database"),
                ours=_kind(settings),
            )
        )
    started, mark = utcnow(), time.monotonic()
    stamp = _stamp()
    safety_dir = settings.data_dir / SAFETY_DIR
    scratch = settings.data_dir / "restore-scratch"
    kept: dict[str, str] = {}
    changed = False
    with exclusive(settings):
        maintenance.enter(
            "restore",
            _(
                "Restoring the backup of %(time)s; Kartoteka will be back in a few minutes.",
                time=manifest.get("created_at", backup["time"])[:16].replace("T", " "),
            ),
        )
        try:
            history = await _saved_runs(settings)
            progress(_("keeping a safety copy of the current database"))
            safety_db = await _safety_copy(settings, safety_dir, stamp)
            if safety_db is not None:
                kept["database"] = str(safety_db)
            progress(_("restoring backup %(id)s from the repository", id=backup["short_id"]))
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
            await asyncio.to_thread(restic.restore, backup["id"], scratch)
            paths = manifest["paths"]

            def staged(path: str) -> Path:
                return scratch / path.lstrip("/")

            progress(_("restoring the database"))
            if settings.is_sqlite:
                restored = staged(paths["staging"]) / db.SQLITE_NAME
                facts = await asyncio.to_thread(db.sqlite_facts, restored, True)
                _prove(manifest, facts)
                ready = settings.sqlite_path.with_name(settings.sqlite_path.name + ".restoring")
                shutil.move(str(restored), str(ready))
                changed = True
                await asyncio.to_thread(db.sqlite_replace, settings.sqlite_path, ready)
            else:
                if not backup["dump"]:
                    raise BackupFailed(
                        _("The database dump of backup %(id)s is missing.", id=backup["short_id"])
                    )
                await asyncio.to_thread(
                    db.pg_load,
                    settings.database_url,
                    restic=restic,
                    snapshot_id=backup["dump"]["id"],
                    replace_schema=True,
                )
                changed = True
                _prove(manifest, await db.pg_facts_of(settings.database_url))

            progress(_("restoring attachments and settings"))
            targets: list[tuple[str, Path, Path]] = [
                ("attachments", staged(paths["attachments"]), settings.attachments_dir)
            ]
            if paths.get("settings"):
                targets.append(
                    (
                        "settings",
                        staged(paths["staging"]) / paths["settings"],
                        settings.settings_file,
                    )
                )
            current_items = {item.name: Path(item.path) for item in plugin_items()}
            for name, old_path in (paths.get("items") or {}).items():
                targets.append(
                    (f"item-{name}", staged(old_path), current_items.get(name, Path(old_path)))
                )
            for label, restored_path, live in targets:
                if not restored_path.exists():
                    continue
                aside = safety_dir / f"{stamp}-{label}"
                if label == "settings":
                    aside = safety_dir / f"{stamp}-{live.name}"
                had = live.exists()
                await asyncio.to_thread(db.move_into_place, restored_path, live, aside)
                if had:
                    kept[label] = str(aside)

            await _carry_over_runs(history, manifest, backup)
            seconds = round(time.monotonic() - mark, 3)
            await _record(
                "restore",
                "ok",
                started,
                snapshot_id=backup["id"],
                details=json.dumps(
                    {"kept": kept, "seconds": seconds, "backup_time": backup["time"]}
                ),
            )
            from core.services import audit

            async with write():
                await audit.record(
                    "backup.restore",
                    "backup",
                    backup["short_id"],
                    _(
                        "Restored the backup of %(time)s (snapshot %(id)s)",
                        time=backup["time"][:16].replace("T", " "),
                        id=backup["short_id"],
                    ),
                    {"snapshot": [None, backup["id"]], "safety_copy": [None, kept.get("database")]},
                )
        except Exception as exc:
            message = message_of(exc)
            if changed:
                how = (
                    _(
                        "To put the data from before the restore back, run: "
                        "kartoteka backup put-back %(path)s",
                        path=kept["database"],
                    )
                    if "database" in kept
                    else _("There was no database before the restore to put back.")
                )
                message = _(
                    "The restore of backup %(id)s failed half-way: %(error)s %(how)s",
                    id=backup["short_id"],
                    error=message,
                    how=how,
                )
                maintenance.enter("restore", message)
            else:
                maintenance.leave()
                message = _(
                    "The restore of backup %(id)s failed; nothing was changed: %(error)s",
                    id=backup["short_id"],
                    error=message,
                )
            await _record_failure_quietly(started, backup["id"], message)
            raise BackupFailed(message) from exc
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        maintenance.leave()
    return {"snapshot_id": backup["id"], "kept": kept, "seconds": round(time.monotonic() - mark, 3)}


def _prove(manifest: dict[str, Any], facts: db.Facts) -> None:
    problems = db.compare(manifest, facts)
    if problems:
        raise BackupFailed(
            _(
                "The restored database does not match the backup: %(problems)s",
                problems=" ".join(problems),
            )
        )


async def put_back(safety_copy: Path, progress: Callable[[str], None] = _nothing) -> dict[str, Any]:
    """Undo a restore: the database (and the files moved aside with it) from the safety dir."""
    settings = get_runtime().settings
    suffix = ".sqlite3" if settings.is_sqlite else ".pgdump"
    if safety_copy.suffix != suffix or not safety_copy.is_file():
        raise BackupFailed(
            _(
                "%(path)s is not a safety copy of this install's database (a %(suffix)s file "
                "in %(folder)s).",
                path=safety_copy,
                suffix=suffix,
                folder=settings.data_dir / SAFETY_DIR,
            )
        )
    stamp = safety_copy.name.removesuffix(suffix)
    now_stamp = _stamp()
    safety_dir = safety_copy.parent
    started = utcnow()
    with exclusive(settings):
        maintenance.enter("restore", _("Putting back the data from before a restore."))
        try:
            progress(_("putting the database back"))
            if settings.is_sqlite:
                ready = settings.sqlite_path.with_name(settings.sqlite_path.name + ".restoring")
                shutil.copy2(safety_copy, ready)
                wal = safety_copy.with_name(safety_copy.name + "-wal")
                if wal.exists():
                    shutil.copy2(wal, ready.with_name(ready.name + "-wal"))
                await asyncio.to_thread(db.sqlite_replace, settings.sqlite_path, ready)
            else:
                await asyncio.to_thread(
                    db.pg_load, settings.database_url, dump_file=safety_copy, replace_schema=True
                )
            progress(_("putting attachments and settings back"))
            current_items = {item.name: Path(item.path) for item in plugin_items()}
            for kept in sorted(safety_dir.glob(f"{stamp}-*")):
                label = kept.name.removeprefix(f"{stamp}-")
                if label == "attachments":
                    live = settings.attachments_dir
                elif label == settings.settings_file.name:
                    live = settings.settings_file
                elif label.startswith("item-") and label[5:] in current_items:
                    live = current_items[label[5:]]
                else:
                    continue
                await asyncio.to_thread(
                    db.move_into_place, kept, live, safety_dir / f"{now_stamp}-{label}"
                )
            await _record(
                "restore",
                "ok",
                started,
                details=json.dumps({"put_back": str(safety_copy)}),
            )
            from core.services import audit

            async with write():
                await audit.record(
                    "backup.put_back",
                    "backup",
                    stamp,
                    _("Put back the data kept before a restore (%(path)s)", path=safety_copy),
                )
        except Exception as exc:
            message = _(
                "Putting back %(path)s failed: %(error)s",
                path=safety_copy,
                error=message_of(exc),
            )
            maintenance.enter("restore", message)
            raise BackupFailed(message) from exc
        maintenance.leave()
    return {"database": str(safety_copy)}
