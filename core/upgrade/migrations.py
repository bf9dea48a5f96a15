"""What an upgrade would migrate, and applying it one migration at a time.

Piccolo's ``ForwardsMigrationManager`` runs every pending migration of an app in one
call and cannot say which one failed, so each pending migration is run on its own
(``migration_id`` = that migration: the earlier ones have already run).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

from piccolo.apps.migrations.commands.base import BaseMigrationManager
from piccolo.apps.migrations.commands.forwards import ForwardsMigrationManager
from piccolo.apps.migrations.tables import Migration

from core.db import MigrationError, bind_tables, prepare_sqlite
from core.runtime import get_runtime


@dataclass(frozen=True)
class Plan:
    pending: list[tuple[str, str]]
    """(app name, migration id) in the order they must run: apps by dependency, then id."""
    applied: int
    """Migrations of the registered apps already in the database."""
    unknown: list[str]
    """``app:id`` recorded in the database but absent from this code: a newer version ran."""


async def plan() -> Plan:
    """Read-only: compares the migration files with Piccolo's ``migration`` table."""
    settings = get_runtime().settings
    if settings.is_sqlite:
        prepare_sqlite(str(settings.sqlite_path))
    bind_tables()
    ran: set[tuple[str, str]] = set()
    if await Migration.table_exists():
        rows = await Migration.select(Migration.app_name, Migration.name)
        ran = {(row["app_name"], row["name"]) for row in rows}
    finder = BaseMigrationManager()
    pending: list[tuple[str, str]] = []
    known: set[tuple[str, str]] = set()
    for app_name in finder.get_sorted_app_names():
        folder = finder.get_app_config(app_name).resolved_migrations_folder_path
        ids = finder.get_migration_ids(finder.get_migration_modules(folder))
        known.update((app_name, migration_id) for migration_id in ids)
        pending.extend((app_name, mid) for mid in ids if (app_name, mid) not in ran)
    apps = {app for app, _ in known}
    # Only registered apps: a disabled plugin's migrations stay recorded, and that is fine.
    unknown = sorted(f"{app}:{mid}" for app, mid in ran - known if app in apps)
    return Plan(pending=pending, applied=len(ran & known), unknown=unknown)


async def apply_one(app_name: str, migration_id: str) -> None:
    """Run one migration (in its own transaction unless it opted out); raise if it fails."""
    with contextlib.redirect_stdout(io.StringIO()):  # Piccolo narrates each step to stdout
        result = await ForwardsMigrationManager(app_name=app_name, migration_id=migration_id).run()
    if not result.success:
        raise MigrationError(result.message or "failed")
