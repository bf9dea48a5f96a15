"""The pipeline board's columns: each stage's most recently updated deals, read in
index order instead of sorting every deal of the stage (see docs/performance.md)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-11-23T01:20:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "board column index"

INDEXES = [
    "CREATE INDEX IF NOT EXISTS core_deal_stage_recent ON core_deal (stage, updated_at, id)",
]


class RawTable(Table):
    pass


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="core", description=DESCRIPTION)

    async def create_indexes():
        for statement in INDEXES:
            await RawTable.raw(statement)

    manager.add_raw(create_indexes)
    return manager
