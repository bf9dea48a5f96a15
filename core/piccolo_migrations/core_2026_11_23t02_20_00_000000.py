"""The full index on core_contact_point.contact misled SQLite: half the points (the
client's own) have no contact, and without per-value statistics it chose that index
for "contact IS NULL" (21 ms per client list page). The next migration indexes only
the points that belong to a contact person."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import ForeignKey

ID = "2026-11-23T02:20:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "contact point index only for contact persons"


async def forwards():
    manager = MigrationManager(
        migration_id=ID, app_name="core", description=DESCRIPTION
    )

    manager.alter_column(
        table_class_name="ContactPoint",
        tablename="core_contact_point",
        column_name="contact",
        db_column_name="contact",
        params={"index": False},
        old_params={"index": True},
        column_class=ForeignKey,
        old_column_class=ForeignKey,
        schema=None,
    )

    return manager
