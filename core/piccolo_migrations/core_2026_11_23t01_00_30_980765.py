"""Drop single-column client indexes: each is a prefix of a composite index that
serves every query it served (docs/performance.md), and each cost a write per change."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import ForeignKey
from piccolo.columns.column_types import Timestamptz
from piccolo.columns.column_types import Varchar

ID = "2026-11-23T01:00:30:980765"
VERSION = "1.38.0"
DESCRIPTION = "drop client indexes covered by composite ones"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="core", description=DESCRIPTION)

    manager.alter_column(
        table_class_name="Client",
        tablename="core_client",
        column_name="name_search",
        db_column_name="name_search",
        params={"index": False},
        old_params={"index": True},
        column_class=Varchar,
        old_column_class=Varchar,
        schema=None,
    )

    manager.alter_column(
        table_class_name="Client",
        tablename="core_client",
        column_name="responsible",
        db_column_name="responsible",
        params={"index": False},
        old_params={"index": True},
        column_class=ForeignKey,
        old_column_class=ForeignKey,
        schema=None,
    )

    manager.alter_column(
        table_class_name="Client",
        tablename="core_client",
        column_name="last_activity_at",
        db_column_name="last_activity_at",
        params={"index": False},
        old_params={"index": True},
        column_class=Timestamptz,
        old_column_class=Timestamptz,
        schema=None,
    )

    return manager
