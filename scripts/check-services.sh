#!/usr/bin/env bash
# Server-mode tests need PostgreSQL, Redis and RabbitMQ on 127.0.0.1; fail loudly
# (never skip) when one is unreachable, and create the test database if needed.
set -euo pipefail
PY=${PY:-.venv/bin/python}
"$PY" - <<'PYEOF'
import socket, sys
missing = []
for name, port in (("PostgreSQL", 5432), ("Redis", 6379), ("RabbitMQ", 5672)):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=3).close()
    except OSError as exc:
        missing.append(f"{name} on 127.0.0.1:{port} ({exc})")
if missing:
    sys.exit("server-mode tests need: " + "; ".join(missing))
PYEOF
"$PY" - <<'PYEOF'
import asyncio, asyncpg
async def main():
    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = 'kartoteka_test'"):
            await conn.execute("CREATE DATABASE kartoteka_test")
    finally:
        await conn.close()
asyncio.run(main())
PYEOF
