"""Succeeds and is committed: the rollback must remove what a *finished* migration did."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

ID = "2026-11-23T09:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "a table with a row"


async def create_and_fill() -> None:
    from core.db import get_engine

    engine = get_engine()
    await engine.run_ddl("CREATE TABLE broken_done (id INTEGER PRIMARY KEY, label VARCHAR(50))")
    await engine.run_ddl("INSERT INTO broken_done (id, label) VALUES (1, 'committed')")


async def forwards():
    manager = MigrationManager(
        migration_id=ID, app_name="broken_migration", description=DESCRIPTION
    )
    manager.add_raw(create_and_fill)
    return manager
