"""The composite unique key of mailing recipients: one row per (mailing, client).

A migration of its own because Piccolo runs a migration's raw SQL before it creates
that migration's tables.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-23T02:00:01:000000"
VERSION = "1.38.0"
DESCRIPTION = "mailing recipient unique key"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="mail", description=DESCRIPTION)

    async def unique_key() -> None:
        # Looked up when it runs: a Table class here would keep the first database seen.
        await engine_finder().run_ddl(
            "CREATE UNIQUE INDEX IF NOT EXISTS mail_mailing_recipient_key"
            " ON mail_mailing_recipient (mailing, client)"
        )

    manager.add_raw(unique_key)
    return manager
