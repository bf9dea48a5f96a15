"""Live deals counted and summed per stage, responsible and currency.

The pipeline board and the dashboard read these few rows instead of aggregating
every deal: at 600,000 deals in one pipeline the aggregate took 900 ms. A deal
counts while neither it nor its client is deleted. Every change to those facts goes
through `add` inside the same write transaction (core.services.deals, clients,
user_admin); `rebuild` recomputes the table from the deals (migration, bulk loads).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from core.db import fetch
from core.services.common import write

Key = tuple[int, int, str]
"""(stage, responsible, currency)"""

LIVE_DEALS = (
    "FROM core_deal d JOIN core_client c ON c.id = d.client "
    "WHERE d.deleted_at IS NULL AND c.deleted_at IS NULL"
)


def delta(deal: dict[str, Any], sign: int) -> tuple[Key, int, int]:
    """One deal entering (+1) or leaving (-1) the totals."""
    key = (int(deal["stage"]), int(deal["responsible"]), str(deal["currency"]))
    return key, sign, sign * int(deal["amount_minor"] or 0)


async def add(changes: Iterable[tuple[Key, int, int]]) -> None:
    """Apply (key, deals, amount) deltas. Keys are applied in sorted order so two
    concurrent transactions lock the rows in the same order (no deadlock)."""
    merged: dict[Key, list[int]] = defaultdict(lambda: [0, 0])
    for key, deals, amount in changes:
        merged[key][0] += deals
        merged[key][1] += amount
    for (stage, responsible, currency), (deals, amount) in sorted(merged.items()):
        if deals == 0 and amount == 0:
            continue
        await fetch(
            "INSERT INTO core_deal_total (stage, responsible, currency, deals, amount_minor) "
            "VALUES ({}, {}, {}, {}, {}) ON CONFLICT (stage, responsible, currency) DO UPDATE "
            "SET deals = core_deal_total.deals + excluded.deals, "
            "amount_minor = core_deal_total.amount_minor + excluded.amount_minor",
            stage,
            responsible,
            currency,
            deals,
            amount,
        )


async def of_deals(where: str, *args: Any) -> list[tuple[Key, int, int]]:
    """The totals of the live deals matching ``where`` (SQL on ``d`` and ``c``), as
    deltas to subtract before those deals change owner or disappear."""
    rows = await fetch(
        "SELECT d.stage AS stage, d.responsible AS responsible, d.currency AS currency, "
        f"COUNT(*) AS deals, COALESCE(SUM(d.amount_minor), 0) AS amount {LIVE_DEALS} "
        f"AND ({where}) GROUP BY d.stage, d.responsible, d.currency",
        *args,
    )
    return [
        (
            (int(r["stage"]), int(r["responsible"]), str(r["currency"])),
            int(r["deals"]),
            int(r["amount"]),
        )
        for r in rows
    ]


def negated(changes: Iterable[tuple[Key, int, int]]) -> list[tuple[Key, int, int]]:
    return [(key, -deals, -amount) for key, deals, amount in changes]


REBUILD = (
    "DELETE FROM core_deal_total",
    "INSERT INTO core_deal_total (stage, responsible, currency, deals, amount_minor) "
    "SELECT d.stage, d.responsible, d.currency, COUNT(*), "
    f"COALESCE(SUM(d.amount_minor), 0) {LIVE_DEALS} "
    "GROUP BY d.stage, d.responsible, d.currency",
)
"""Plain SQL, so a bulk loader on its own connection can run it inside its load."""


async def rebuild() -> None:
    """Recompute every total from the deals (after rows were written around the deals
    service: a bulk load, a repair)."""
    async with write():
        for statement in REBUILD:
            await fetch(statement)
