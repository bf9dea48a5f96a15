"""Phone lookup at scale: how long the core takes to find who is calling.

Times ``core.services.clients.find_client`` (the path every incoming call takes:
normalise, then the ``lookup_client`` hook) on the 1M-client dataset, for numbers of
known clients, of their contact persons and of nobody, each written the ways a PBX
or a person writes them. Reports p50/p95/max per kind in milliseconds.

    .venv/bin/python -m bench.telephony_lookup                       # kartoteka_bench (1m)
    .venv/bin/python -m bench.telephony_lookup --database-url postgresql://...  --samples 500
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/kartoteka_bench"


def formats(e164: str) -> list[str]:
    """+79161234567 as people and PBXs write it."""
    national = e164[2:]
    return [
        e164,
        "8" + national,
        f"8 ({national[:3]}) {national[3:6]}-{national[6:8]}-{national[8:]}",
        f"+7 {national[:3]} {national[3:6]} {national[6:]}",
        "7" + national,
    ]


def summary(name: str, times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    return (
        f"{name:<28} n={len(ordered):>5}  p50={statistics.median(ordered) * 1000:7.2f} ms  "
        f"p95={p95 * 1000:7.2f} ms  max={ordered[-1] * 1000:7.2f} ms"
    )


async def run(url: str, samples: int, seed: int, pool: bool) -> list[str]:
    from core.db import bind_tables, get_engine, start_pool
    from core.services.clients import find_client

    bind_tables()
    engine = get_engine()
    if pool:  # as the web processes run in server mode; without it each query connects
        await start_pool()
    rng = random.Random(seed)
    clients = await engine.run_ddl(  # type: ignore[attr-defined]
        "SELECT p.value, p.client FROM core_contact_point p TABLESAMPLE SYSTEM (1) "
        "JOIN core_client c ON c.id = p.client "
        f"WHERE p.kind = 'phone' AND p.value LIKE '+7%' AND p.contact IS NULL AND c.deleted_at IS NULL LIMIT {samples}"
    )
    contacts = await engine.run_ddl(  # type: ignore[attr-defined]
        "SELECT p.value, p.client FROM core_contact_point p TABLESAMPLE SYSTEM (1) "
        "JOIN core_client c ON c.id = p.client "
        f"WHERE p.kind = 'phone' AND p.value LIKE '+7%' AND p.contact IS NOT NULL AND c.deleted_at IS NULL LIMIT {samples}"
    )
    unknown = [
        {"value": f"+7999{rng.randrange(10**7):07d}", "client": None} for _ in range(samples)
    ]
    report = []
    for name, rows in (
        ("client phone", clients),
        ("contact person phone", contacts),
        ("unknown", unknown),
    ):
        for fmt_index, fmt_name in enumerate(
            ("E.164", "8XXXXXXXXXX", "8 (XXX) XXX-XX-XX", "+7 XXX XXX XXXX", "7XXXXXXXXXX")
        ):
            times: list[float] = []
            for row in rows:
                number = formats(row["value"])[fmt_index]
                started = time.perf_counter()
                found = await find_client(phone=number)
                times.append(time.perf_counter() - started)
                if row["client"] is not None and found is None:
                    raise SystemExit(f"{number} was not found (client {row['client']})")
                if row["client"] is None and found is not None:
                    raise SystemExit(f"{number} is nobody's number but matched client {found}")
            report.append(summary(f"{name}, {fmt_name}", times))
    return report


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-pool", action="store_true", help="a new connection per query")
    args = parser.parse_args(argv)
    os.environ["DATABASE_URL"] = args.database_url
    os.environ.setdefault("KARTOTEKA_DATA_DIR", tempfile.mkdtemp(prefix="kartoteka-bench-lookup-"))
    os.environ.setdefault("KARTOTEKA_PLUGINS", "telephony")
    started = time.perf_counter()
    report = asyncio.run(run(args.database_url, args.samples, args.seed, not args.no_pool))
    database = args.database_url.rsplit("/", 1)[-1]
    pooled = "no pool" if args.no_pool else "connection pool"
    out(f"phone lookup, {database}, {pooled} ({time.perf_counter() - started:.1f} s)")
    for line in report:
        out(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
