"""The contact persons' points, for their card and for cascade deletes (see the
previous migration for why the index is partial)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

ID = "2026-11-23T02:21:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "partial contact point index"


async def forwards():
    # The engine of the current install, looked up when the migration runs (a Table
    # class declared here would keep the engine of the first database it saw).
    from core.db import get_engine

    manager = MigrationManager(migration_id=ID, app_name="core", description=DESCRIPTION)

    async def create_index():
        await get_engine().run_ddl(
            "CREATE INDEX IF NOT EXISTS core_contact_point_person "
            "ON core_contact_point (contact) WHERE contact IS NOT NULL"
        )

    manager.add_raw(create_index)
    return manager
