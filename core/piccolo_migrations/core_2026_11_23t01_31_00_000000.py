"""Fill core_deal_total from the existing deals (Piccolo runs a migration's raw steps
before its table changes, so this cannot live in the migration creating the table)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

ID = "2026-11-23T01:31:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "fill deal totals"


async def forwards():
    # The engine of the current install, looked up when the migration runs (a Table
    # class declared here would keep the engine of the first database it saw).
    from core.db import get_engine

    manager = MigrationManager(migration_id=ID, app_name="core", description=DESCRIPTION)

    async def fill():
        await get_engine().run_ddl(
            "CREATE UNIQUE INDEX IF NOT EXISTS core_deal_total_key "
            "ON core_deal_total (stage, responsible, currency)"
        )
        await get_engine().run_ddl(
            "INSERT INTO core_deal_total (stage, responsible, currency, deals, amount_minor) "
            "SELECT d.stage, d.responsible, d.currency, COUNT(*), COALESCE(SUM(d.amount_minor), 0) "
            "FROM core_deal d JOIN core_client c ON c.id = d.client "
            "WHERE d.deleted_at IS NULL AND c.deleted_at IS NULL "
            "GROUP BY d.stage, d.responsible, d.currency"
        )

    manager.add_raw(fill)
    return manager
