"""`kartoteka upgrade`: migrate the database to the running code without risking the data.

Files in the data directory (the database may be the very thing being replaced):

- ``version``: the Kartoteka version the data was last migrated by (one line).
- ``upgrade.lock``: held (flock) while an upgrade works; two at once are refused.
- ``upgrade-running.json``: the journal of the upgrade under way (safety copy, the
  database state before, the migration running). Found with the lock free, it means
  the process died mid-way: the next run puts the safety copy back first.
- ``upgrade-failed.json``: why the last upgrade failed and what was restored; while
  it exists maintenance stays on, until a version matching the data runs
  `kartoteka upgrade` (the previous one) or ``--retry`` tries again.
- ``safety/pre-upgrade-FROM-to-TO-STAMP.sqlite3|.pgdump``: the copies.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import core
from core import maintenance
from core import plugins as plugin_registry
from core.plugins import PluginError, incompatible_with_core, resolve
from core.runtime import get_runtime
from core.settings import Settings, get_settings
from core.upgrade import migrations
from core.upgrade.database import DatabaseCopyError, DatabaseState, for_settings

EXIT_OK = 0
EXIT_REFUSED = 2
"""Nothing was changed: an incompatible plugin, maintenance, another upgrade, ..."""
EXIT_ROLLED_BACK = 3
"""A migration failed; the database was put back and maintenance stays on."""

VERSION_FILE = "version"
LOCK_FILE = "upgrade.lock"
JOURNAL_FILE = "upgrade-running.json"
FAILED_FILE = "upgrade-failed.json"
SAFETY_DIR = "safety"
COPY_PREFIX = "pre-upgrade-"
KEEP_COPIES = 3
"""Pre-upgrade copies kept after a successful upgrade (they can be large)."""


@dataclass
class Outcome:
    code: int
    lines: list[str] = field(default_factory=list)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def _write_text(path: Path, text: str) -> None:
    """All at once or not at all: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    _write_text(path, json.dumps(data, indent=2, ensure_ascii=False))


def recorded_version(settings: Settings | None = None) -> str | None:
    """The version that last migrated this install's data, if any did since versions
    were recorded."""
    path = (settings or get_settings()).data_dir / VERSION_FILE
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def failed_upgrade(settings: Settings | None = None) -> dict[str, Any] | None:
    """The record of a failed upgrade still standing; while there is one, nothing may
    migrate (`kartoteka run`, the entrypoint) and the web answers 503 with the reason."""
    return _read_json((settings or get_settings()).data_dir / FAILED_FILE)


def _record_version(settings: Settings, version: str) -> None:
    _write_text(settings.data_dir / VERSION_FILE, version + "\n")


@contextmanager
def _exclusive(settings: Settings) -> Iterator[bool]:
    """True while this process alone upgrades this data directory."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.data_dir / LOCK_FILE, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # a container user without a passwd entry
        return "system"


async def _audit(action: str, summary: str, changes: dict[str, Any]) -> str | None:
    """Write an audit entry; returns why it could not be written (an old schema may lack
    the audit table), never raises: the upgrade's outcome matters more than its entry."""
    from core.db import bind_tables
    from core.services import audit

    bind_tables()
    token = audit.system_actor.set(_operator())
    try:
        await audit.record(action, "system", core.__version__, summary, changes)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        audit.system_actor.reset(token)
    return None


def _words(version: str | None) -> str:
    return version or "the previous version"


def _refused(message: str) -> Outcome:
    return Outcome(EXIT_REFUSED, [f"upgrade refused, nothing was changed: {message}"])


async def _restic_snapshot(settings: Settings) -> list[str]:
    """A restic snapshot tagged ``pre-upgrade`` when backups are configured.

    The automatic rollback uses the local safety copy; this one also survives the loss
    of the server. Its failure is recorded and alerted by `core.backup` and does not
    stop the upgrade: the local copy is what protects it.
    """
    if not settings.backup_repository:
        return []
    from core.backup.engine import run_backup

    try:
        result = await run_backup(trigger="pre-upgrade")
    except Exception as exc:  # an old schema may even lack the table runs are kept in
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        return [f"warning: no restic snapshot before the upgrade ({message}); going on"]
    return [f"restic snapshot before the upgrade: {result['snapshot_id']}"]


async def upgrade(retry: bool = False) -> Outcome:
    """Check, copy, migrate; put the copy back if anything fails. See the module doc."""
    settings = get_settings()
    target = core.__version__
    try:
        enabled = resolve(settings.plugins, plugin_registry.discover())
    except PluginError as exc:
        return _refused(str(exc))
    incompatible = incompatible_with_core(enabled, target)
    if incompatible:
        return _refused(
            "; ".join(incompatible)
            + f". Install versions of these plugins made for Kartoteka {target}, or disable "
            "them (`kartoteka plugins disable NAME`) and upgrade again."
        )
    get_runtime()  # loads the enabled plugins: their migrations are part of the upgrade
    with _exclusive(settings) as alone:
        if not alone:
            return _refused("another `kartoteka upgrade` is running on this data directory")
        return await _upgrade(settings, target, retry)


async def _upgrade(settings: Settings, target: str, retry: bool) -> Outcome:
    data_dir = settings.data_dir
    journal = _read_json(data_dir / JOURNAL_FILE)
    if journal is not None:  # the lock was free: the process that wrote it is gone
        return await _roll_back(
            settings,
            journal,
            failed_migration=journal.get("running", ""),
            error="the upgrade process stopped before it finished (killed, crashed, "
            "or the machine went down)",
        )
    failed = failed_upgrade(settings)
    state = maintenance.current()
    # An "upgrade" flag without a journal is taken over: either the last upgrade failed
    # (see ``failed``) or it stopped before changing anything (the journal is written
    # before the first migration).
    if state is not None and state.get("kind") != "upgrade":
        return _refused(
            f"maintenance ({state.get('kind')}) is on since {state.get('since')}: "
            f"{state.get('reason')} Try again when it is over."
        )
    plan = await migrations.plan()
    if plan.unknown:
        return _refused(
            f"the database was migrated by a newer version than {target} (it has "
            f"migrations this version does not know: {', '.join(plan.unknown)}). Run the "
            "version that migrated it."
        )
    if failed and not failed.get("restored") and not retry:
        return _refused(
            f"the upgrade to {failed['to_version']} failed and its automatic restore could "
            f"not be confirmed. Restore {failed['safety_copy']} by hand, then run "
            "`kartoteka upgrade --retry`."
        )
    if failed and plan.pending and not retry:
        return _refused(
            f"the upgrade to {failed['to_version']} failed earlier "
            f"({failed['failed_migration']}: {failed['error']}); the data is intact at "
            f"{_words(failed['from_version'])}. Run that version, or fix the cause and run "
            "`kartoteka upgrade --retry`."
        )
    if not plan.pending:
        lines: list[str] = []
        if failed:
            _archive_failure(settings)
            lines.append(
                f"this version ({target}) matches the data: the failed upgrade to "
                f"{failed['to_version']} is behind us, maintenance mode is off"
            )
        if state is not None:
            maintenance.leave()
        _record_version(settings, target)
        return Outcome(EXIT_OK, [*lines, f"no pending migrations; version {target} recorded"])
    if plan.applied == 0:
        return await _first_install(settings, target, plan)
    return await _migrate_safely(settings, target, plan)


async def _first_install(settings: Settings, target: str, plan: migrations.Plan) -> Outcome:
    """An empty database has nothing to protect: migrate it like `kartoteka migrate`."""
    for app_name, migration_id in plan.pending:
        await migrations.apply_one(app_name, migration_id)
    _record_version(settings, target)
    return Outcome(EXIT_OK, [f"new database: {len(plan.pending)} migrations applied"])


async def _migrate_safely(settings: Settings, target: str, plan: migrations.Plan) -> Outcome:
    source = recorded_version(settings)
    maintenance.enter(
        "upgrade",
        f"Kartoteka is being upgraded from {_words(source)} to {target}. "
        "It will be back in a few minutes.",
    )
    database = for_settings(settings)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    copy = (
        settings.data_dir
        / SAFETY_DIR
        / f"{COPY_PREFIX}{source or 'unknown'}-to-{target}-{stamp}{database.suffix}"
    )
    try:
        before = await database.copy_to(copy)
    except (DatabaseCopyError, OSError) as exc:  # OSError: a full disk, for one
        maintenance.leave()
        return _refused(f"the safety copy of the database could not be taken: {exc}")
    lines = [f"safety copy of the database: {copy}"]
    lines += await _restic_snapshot(settings)
    journal: dict[str, Any] = {
        "from_version": source,
        "to_version": target,
        "started_at": _now(),
        "safety_copy": str(copy),
        "before": before.to_json(),
        "applied": [],
        "running": "",
    }
    journal_path = settings.data_dir / JOURNAL_FILE
    applied: list[str] = journal["applied"]
    for app_name, migration_id in plan.pending:
        name = f"{app_name}:{migration_id}"
        journal["running"] = name
        _write_json(journal_path, journal)
        try:
            await migrations.apply_one(app_name, migration_id)
        except Exception as exc:
            return await _roll_back(
                settings, journal, failed_migration=name, error=f"{type(exc).__name__}: {exc}"
            )
        applied.append(name)
    _record_version(settings, target)
    problem = await _audit(
        "system.upgrade",
        f"Kartoteka upgraded from {_words(source)} to {target}: {len(applied)} migrations",
        {"version": [source, target], "migrations": [[], applied]},
    )
    if problem:
        lines.append(f"warning: the audit entry could not be written: {problem}")
    _archive_failure(settings)
    journal_path.unlink()
    maintenance.leave()
    _prune_copies(settings)
    lines += [f"applied {name}" for name in applied]
    lines.append(f"upgraded from {_words(source)} to {target}")
    return Outcome(EXIT_OK, lines)


async def _roll_back(
    settings: Settings, journal: dict[str, Any], failed_migration: str, error: str
) -> Outcome:
    """Put the safety copy back, prove it, and tell the owner what happened and what to do."""
    database = for_settings(settings)
    copy = Path(journal["safety_copy"])
    before = DatabaseState.from_json(journal["before"])
    source, target = journal["from_version"], journal["to_version"]
    try:
        await database.restore_from(copy)
        problems = before.differences(await database.state())
    except Exception as exc:
        problems = [f"the safety copy could not be put back: {type(exc).__name__}: {exc}"]
    intact = not problems
    failure: dict[str, Any] = {
        "failed_at": _now(),
        "from_version": source,
        "to_version": target,
        "failed_migration": failed_migration,
        "error": error,
        "applied_before_failure": journal["applied"],
        "safety_copy": str(copy),
        "restored": intact,
        "restore_problems": problems,
        "schema": before.last_migrations,
        "rows": before.rows,
    }
    if intact:
        failure["audit_problem"] = await _audit(
            "system.upgrade_failed",
            f"upgrade from {_words(source)} to {target} failed in {failed_migration}: "
            f"{error[:600]}; the database was restored",
            {"version": [source, target]},
        )
        reason = (
            f"The upgrade to Kartoteka {target} failed (migration {failed_migration}). "
            f"Your data is intact: the database is back as it was at {_words(source)}. "
            f"To work now, run {_words(source)} again (for the appliance: start the image "
            "tag you ran before). Details for the administrator: upgrade-failed.json in the "
            "data directory."
        )
        lines = [
            f"migration {failed_migration} failed: {error}",
            f"the database was restored from {copy} and checked: migrations and row "
            "counts are as before the upgrade",
            f"maintenance mode stays on; run {_words(source)} again, or fix the cause and "
            "run `kartoteka upgrade --retry`",
        ]
    else:
        reason = (
            f"The upgrade to Kartoteka {target} failed (migration {failed_migration}) and "
            "the automatic restore could not be confirmed. Do not use this install until "
            f"the administrator has restored the database from {copy.name} in the data "
            "directory's safety folder. Details: upgrade-failed.json in the data directory."
        )
        lines = [
            f"migration {failed_migration} failed: {error}",
            f"THE AUTOMATIC RESTORE FROM {copy} COULD NOT BE CONFIRMED: " + "; ".join(problems),
            "maintenance mode stays on; restore the safety copy by hand before going on",
        ]
    maintenance.enter("upgrade", reason)
    _write_json(settings.data_dir / FAILED_FILE, failure)
    (settings.data_dir / JOURNAL_FILE).unlink(missing_ok=True)
    return Outcome(EXIT_ROLLED_BACK, lines)


def _archive_failure(settings: Settings) -> None:
    """Keep the record of a failed upgrade next to its safety copy once it is behind us."""
    failed = settings.data_dir / FAILED_FILE
    if failed.exists():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        (settings.data_dir / SAFETY_DIR).mkdir(parents=True, exist_ok=True)
        os.replace(failed, settings.data_dir / SAFETY_DIR / f"upgrade-failed-{stamp}.json")


def _prune_copies(settings: Settings) -> None:
    copies = sorted(
        (settings.data_dir / SAFETY_DIR).glob(f"{COPY_PREFIX}*"),
        key=lambda path: path.stat().st_mtime,
        reverse=True,
    )
    for path in copies[KEEP_COPIES:]:
        path.unlink(missing_ok=True)
