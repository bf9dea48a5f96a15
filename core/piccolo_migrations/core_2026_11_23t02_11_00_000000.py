"""Composite indexes for my tasks and the manager's pipeline board (docs/performance.md)."""

ID = "2026-11-23T02:11:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "open tasks and board column indexes"

INDEXES = [
    # one user's open tasks in due order: today, overdue, upcoming, the dashboard panel
    "CREATE INDEX IF NOT EXISTS core_task_assignee_due "
    "ON core_task (assignee, due_at, id) WHERE done_at IS NULL",
    # a manager's board column: their deals of one stage, most recently updated first
    "CREATE INDEX IF NOT EXISTS core_deal_resp_stage_recent "
    "ON core_deal (responsible, stage, updated_at, id)",
]


async def forwards():
    from core.db import sql_migration

    return sql_migration(ID, "core", DESCRIPTION, INDEXES)
