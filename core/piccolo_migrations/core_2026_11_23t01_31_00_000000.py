"""Fill core_deal_total from the existing deals (Piccolo runs a migration's raw steps
before its table changes, so this cannot live in the migration creating the table)."""

ID = "2026-11-23T01:31:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "fill deal totals"


STATEMENTS = [
    "CREATE UNIQUE INDEX IF NOT EXISTS core_deal_total_key "
    "ON core_deal_total (stage, responsible, currency)",
    "INSERT INTO core_deal_total (stage, responsible, currency, deals, amount_minor) "
    "SELECT d.stage, d.responsible, d.currency, COUNT(*), COALESCE(SUM(d.amount_minor), 0) "
    "FROM core_deal d JOIN core_client c ON c.id = d.client "
    "WHERE d.deleted_at IS NULL AND c.deleted_at IS NULL "
    "GROUP BY d.stage, d.responsible, d.currency",
]


async def forwards():
    from core.db import sql_migration

    return sql_migration(ID, "core", DESCRIPTION, STATEMENTS)
