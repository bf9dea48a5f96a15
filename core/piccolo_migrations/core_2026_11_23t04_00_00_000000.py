"""Card views by viewer and client, so opening a card can tell a first view in the
hour (which may raise the anomaly pace) from a repeat (which cannot) with one index
lookup. Partial: the other audit entries never need it."""

ID = "2026-11-23T04:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "card views by viewer index"

INDEXES = [
    "CREATE INDEX IF NOT EXISTS core_audit_card_view "
    "ON core_audit (actor_id, object_id, occurred_at) WHERE action = 'client.view'",
]


async def forwards():
    from core.db import sql_migration

    return sql_migration(ID, "core", DESCRIPTION, INDEXES)
