"""Indexes for the audit log and for record-level visibility (see docs/security.md)."""

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
    from core.db import sql_migration

    return sql_migration(ID, "core", DESCRIPTION, INDEXES)
