"""The sync's idempotency keys: composite unique indexes Piccolo columns cannot declare.

A separate migration because raw steps of a MigrationManager run before its new tables.
The engine is looked up when the step runs (not a Table class bound at import), so the
SQL goes to the database being migrated, inside the migration's transaction.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-23T01:00:01:000000"
VERSION = "1.38.0"
DESCRIPTION = "mail idempotency keys"

UNIQUE_KEYS = (
    "CREATE UNIQUE INDEX mail_location_server_key"
    " ON mail_location (mailbox, folder, uidvalidity, uid)",
    "CREATE UNIQUE INDEX mail_message_client_key ON mail_message_client (message, client)",
    "CREATE UNIQUE INDEX mail_folder_role_key ON mail_folder (mailbox, role)",
)
DROP_KEYS = ("mail_location_server_key", "mail_message_client_key", "mail_folder_role_key")


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="mail", description=DESCRIPTION)

    async def create_keys() -> None:
        engine = engine_finder()
        for statement in UNIQUE_KEYS:
            await engine.run_ddl(statement)

    async def drop_keys() -> None:
        engine = engine_finder()
        for name in DROP_KEYS:
            await engine.run_ddl(f"DROP INDEX IF EXISTS {name}")

    manager.add_raw(create_keys)
    manager.add_raw_backwards(drop_keys)
    return manager
