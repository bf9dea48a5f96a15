"""Composite indexes the hot pages rely on (Piccolo only declares single columns).

See docs/performance.md for which page uses which index.
"""

ID = "2026-11-22T10:45:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "composite indexes"

INDEXES = [
    # lookup by phone / e-mail (telephony, mail, search, duplicate warnings)
    "CREATE INDEX IF NOT EXISTS core_contact_point_lookup ON core_contact_point (kind, value)",
    # tag filter on the client list
    "CREATE UNIQUE INDEX IF NOT EXISTS core_client_tag_tag ON core_client_tag (tag, client)",
    # client list: keyset pages by name and by last activity, per manager too
    "CREATE INDEX IF NOT EXISTS core_client_name_id ON core_client (name_search, id)",
    "CREATE INDEX IF NOT EXISTS core_client_activity_id ON core_client (last_activity_at, id)",
    "CREATE INDEX IF NOT EXISTS core_client_resp_name ON core_client (responsible, name_search, id)",
    # the card's timeline, newest first
    "CREATE INDEX IF NOT EXISTS core_timeline_client_time ON core_timeline (client, occurred_at, id)",
    # my tasks (today / overdue / upcoming) and the reminder scan
    "CREATE INDEX IF NOT EXISTS core_task_assignee_open ON core_task (assignee, done_at, due_at)",
    "CREATE INDEX IF NOT EXISTS core_task_reminder ON core_task (reminded_at, due_at)",
    # the pipeline board
    "CREATE INDEX IF NOT EXISTS core_deal_pipeline_stage ON core_deal (pipeline, stage, id)",
    # the notification badge
    'CREATE INDEX IF NOT EXISTS core_notification_unread ON core_notification ("user", read_at)',
]


async def forwards():
    from core.db import sql_migration

    return sql_migration(ID, "core", DESCRIPTION, INDEXES)
