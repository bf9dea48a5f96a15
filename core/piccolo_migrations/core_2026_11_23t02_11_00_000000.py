"""Composite indexes for my tasks and the manager's pipeline board (docs/performance.md)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

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
    # The engine of the current install, looked up when the migration runs (a Table
    # class declared here would keep the engine of the first database it saw).
    from core.db import get_engine

    manager = MigrationManager(migration_id=ID, app_name="core", description=DESCRIPTION)

    async def create_indexes():
        for statement in INDEXES:
            await get_engine().run_ddl(statement)

    manager.add_raw(create_indexes)
    return manager
