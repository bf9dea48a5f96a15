"""The contact persons' points, for their card and for cascade deletes (see the
previous migration for why the index is partial)."""

ID = "2026-11-23T02:21:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "partial contact point index"

INDEXES = [
    "CREATE INDEX IF NOT EXISTS core_contact_point_person "
    "ON core_contact_point (contact) WHERE contact IS NOT NULL",
]


async def forwards():
    from core.db import sql_migration

    return sql_migration(ID, "core", DESCRIPTION, INDEXES)
