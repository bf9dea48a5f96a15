"""The composite unique key of mailing recipients: one row per (mailing, client).

A migration of its own because Piccolo runs a migration's raw SQL before it creates
that migration's tables.
"""

ID = "2026-11-23T02:00:01:000000"
VERSION = "1.38.0"
DESCRIPTION = "mailing recipient unique key"

STATEMENTS = [
    "CREATE UNIQUE INDEX IF NOT EXISTS mail_mailing_recipient_key"
    " ON mail_mailing_recipient (mailing, client)",
]


async def forwards():
    from core.db import sql_migration

    return sql_migration(ID, "mail", DESCRIPTION, STATEMENTS)
