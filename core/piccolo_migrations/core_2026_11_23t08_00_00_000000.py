"""Name search finds a fragment from anywhere in the name ('сток' finds 'Восток-57'):
a trigram index on the search key.

PostgreSQL: pg_trgm's GIN index, which serves ``name_search LIKE '%...%'``. pg_trgm
ships with PostgreSQL and is a trusted extension (a database owner may create it);
where it cannot be created the search still works, by reading the table.
SQLite: an FTS5 table with the trigram tokenizer over ``core_client.name_search``
(external content: the index only), kept in step by triggers.
"""

ID = "2026-11-23T08:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "trigram index for name fragments"

POSTGRES = [
    "DO $$ BEGIN CREATE EXTENSION IF NOT EXISTS pg_trgm; "
    "EXCEPTION WHEN OTHERS THEN RAISE NOTICE 'pg_trgm is not available: %', SQLERRM; END $$",
    "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN "
    "CREATE INDEX IF NOT EXISTS core_client_name_trgm ON core_client "
    "USING gin (name_search gin_trgm_ops); END IF; END $$",
]

SQLITE = [
    "CREATE VIRTUAL TABLE IF NOT EXISTS core_client_name_fts USING fts5("
    "name_search, content='core_client', content_rowid='id', tokenize='trigram')",
    "INSERT INTO core_client_name_fts(core_client_name_fts) VALUES ('rebuild')",
    "CREATE TRIGGER IF NOT EXISTS core_client_name_fts_insert AFTER INSERT ON core_client "
    "BEGIN INSERT INTO core_client_name_fts(rowid, name_search) "
    "VALUES (new.id, new.name_search); END",
    "CREATE TRIGGER IF NOT EXISTS core_client_name_fts_delete AFTER DELETE ON core_client "
    "BEGIN INSERT INTO core_client_name_fts(core_client_name_fts, rowid, name_search) "
    "VALUES ('delete', old.id, old.name_search); END",
    "CREATE TRIGGER IF NOT EXISTS core_client_name_fts_update "
    "AFTER UPDATE OF name_search ON core_client "
    "BEGIN INSERT INTO core_client_name_fts(core_client_name_fts, rowid, name_search) "
    "VALUES ('delete', old.id, old.name_search); "
    "INSERT INTO core_client_name_fts(rowid, name_search) VALUES (new.id, new.name_search); "
    "END",
]


async def forwards():
    from core.db import sql_migration

    return sql_migration(ID, "core", DESCRIPTION, [], postgres=POSTGRES, sqlite=SQLITE)
