"""The pipeline board's columns: each stage's most recently updated deals, read in
index order instead of sorting every deal of the stage (see docs/performance.md)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

ID = "2026-11-23T01:20:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "board column index"

INDEXES = [
    "CREATE INDEX IF NOT EXISTS core_deal_stage_recent ON core_deal (stage, updated_at, id)",
]


async def forwards():
    # The engine of the current install, looked up when the migration runs (a Table
    # class declared here would keep the engine of the first database it saw).
    from core.db import get_engine

    manager = MigrationManager(migration_id=ID, app_name="core", description=DESCRIPTION)

    async def create_indexes():
        for statement in INDEXES:
            await get_engine().run_ddl(statement)

    manager.add_raw(create_indexes)
    return manager
