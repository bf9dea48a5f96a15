"""The pipeline board's columns: each stage's most recently updated deals, read in
index order instead of sorting every deal of the stage (see docs/performance.md)."""

ID = "2026-11-23T01:20:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "board column index"

INDEXES = [
    "CREATE INDEX IF NOT EXISTS core_deal_stage_recent ON core_deal (stage, updated_at, id)",
]


async def forwards():
    from core.db import sql_migration

    return sql_migration(ID, "core", DESCRIPTION, INDEXES)
