"""Fails half-way outside a transaction: what it changed stays changed unless the
upgrade puts the safety copy back."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

ID = "2026-11-23T09:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "changes core data, then fails"


async def damage_then_fail() -> None:
    from core.db import get_engine

    engine = get_engine()
    await engine.run_ddl("CREATE TABLE broken_half (id INTEGER PRIMARY KEY)")
    await engine.run_ddl("INSERT INTO broken_half (id) VALUES (1)")
    await engine.run_ddl("UPDATE core_client SET name = 'overwritten by a broken migration'")
    await engine.run_ddl("DELETE FROM core_contact")
    raise RuntimeError("this migration fails on purpose")


async def forwards():
    manager = MigrationManager(
        migration_id=ID,
        app_name="broken_migration",
        description=DESCRIPTION,
        wrap_in_transaction=False,
    )
    manager.add_raw(damage_then_fail)
    return manager
