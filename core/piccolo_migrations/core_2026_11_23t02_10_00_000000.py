"""My tasks: the single-column due_at index made PostgreSQL walk every task in due order
(3 s for a manager's overdue view at 3M tasks); the contact persons' points get the
index their card query and cascade deletes need. The composite indexes follow."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import ForeignKey
from piccolo.columns.column_types import Timestamptz

ID = "2026-11-23T02:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "task and contact point indexes"


async def forwards():
    manager = MigrationManager(
        migration_id=ID, app_name="core", description=DESCRIPTION
    )

    manager.alter_column(
        table_class_name="ContactPoint",
        tablename="core_contact_point",
        column_name="contact",
        db_column_name="contact",
        params={"index": True},
        old_params={"index": False},
        column_class=ForeignKey,
        old_column_class=ForeignKey,
        schema=None,
    )

    manager.alter_column(
        table_class_name="Task",
        tablename="core_task",
        column_name="due_at",
        db_column_name="due_at",
        params={"index": False},
        old_params={"index": True},
        column_class=Timestamptz,
        old_column_class=Timestamptz,
        schema=None,
    )

    return manager
