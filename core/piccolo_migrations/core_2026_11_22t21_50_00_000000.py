"""Indexes for the audit log and for record-level visibility (see docs/security.md)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

ID = "2026-11-22T21:50:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "audit and scope indexes"

INDEXES = [
    # the audit browser (newest first, by user, by action, by object) and the
    # per-hour counters behind login throttling and the anomaly alert
    "CREATE INDEX IF NOT EXISTS core_audit_time ON core_audit (occurred_at, id)",
    "CREATE INDEX IF NOT EXISTS core_audit_actor ON core_audit (actor_id, action, occurred_at)",
    "CREATE INDEX IF NOT EXISTS core_audit_action ON core_audit (action, occurred_at)",
    "CREATE INDEX IF NOT EXISTS core_audit_object ON core_audit (object_type, object_id)",
    # "flagged only": security alerts among millions of ordinary entries
    "CREATE INDEX IF NOT EXISTS core_audit_flagged ON core_audit (occurred_at, id) WHERE flagged",
    # a manager's own clients sorted by last activity (record-level scope)
    "CREATE INDEX IF NOT EXISTS core_client_resp_activity "
    "ON core_client (responsible, last_activity_at, id)",
    # a manager's own deals and tasks they created
    "CREATE INDEX IF NOT EXISTS core_deal_resp ON core_deal (responsible, id)",
    "CREATE INDEX IF NOT EXISTS core_task_creator ON core_task (created_by, done_at, due_at)",
]


async def forwards():
    # The engine of the current install, looked up when the migration runs (a Table
    # class declared here would keep the engine of the first database it saw).
    from core.db import get_engine

    manager = MigrationManager(migration_id=ID, app_name="core", description=DESCRIPTION)

    async def create_indexes():
        for statement in INDEXES:
            await get_engine().run_ddl(statement)

    manager.add_raw(create_indexes)
    return manager
