"""What a user sees on the start page: their tasks, open deals, recent clients, widgets."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core import access
from core.db import fetch
from core.runtime import get_runtime
from core.services import tasks
from core.services.common import as_utc, utcnow
from core.tables import Client

TOP = 5
RECENT_CLIENTS = 10


async def task_summary(user_id: int, now: datetime | None = None) -> dict[str, Any]:
    """Counts and the first few tasks of the "overdue" and "today" views."""
    now = as_utc(now) if now else utcnow()
    counts = await tasks.counts(user_id, now)
    return {
        "overdue_count": counts["overdue"],
        "today_count": counts["today"],
        "overdue": await tasks.my_tasks(user_id, "overdue", now, limit=TOP),
        "today": await tasks.my_tasks(user_id, "today", now, limit=TOP),
    }


async def open_deals_by_stage(user_id: int) -> list[dict[str, Any]]:
    """The user's open deals counted and summed per pipeline, stage and currency."""
    rows = await fetch(
        "SELECT p.id AS pipeline_id, p.name AS pipeline_name, s.id AS stage_id, "
        "s.name AS stage_name, t.currency AS currency, t.deals AS deals, "
        "t.amount_minor AS amount_minor "
        "FROM core_deal_total t "  # kept per stage and responsible: no scan of the deals
        "JOIN core_stage s ON s.id = t.stage "
        "JOIN core_pipeline p ON p.id = s.pipeline "
        "WHERE t.responsible = {} AND t.deals > 0 AND s.outcome = 'open' "
        "ORDER BY p.position, p.id, s.position, s.id, t.currency",
        user_id,
    )
    amounts_hidden = access.current().hides("deal.amount")
    for row in rows:  # PostgreSQL sums a bigint to a numeric
        row["deals"] = int(row["deals"])
        row["amount_minor"] = None if amounts_hidden else int(row["amount_minor"])
    return rows


async def recent_clients(user_id: int, limit: int = RECENT_CLIENTS) -> list[dict[str, Any]]:
    """The user's clients with the latest activity."""
    rows = (
        await Client.select(Client.id, Client.name, Client.kind, Client.last_activity_at)
        .where((Client.responsible == user_id) & Client.deleted_at.is_null())
        .order_by(Client.last_activity_at, Client.id, ascending=False)
        .limit(limit)
    )
    for row in rows:
        row["last_activity_at"] = as_utc(row["last_activity_at"])
    return rows


def widgets(user: dict[str, Any]) -> list[Any]:
    """Plugin tiles, in their order; each is loaded by the browser from its own URL."""
    found = get_runtime().plugins.collect("dashboard_widgets", user=user)
    return sorted(found, key=lambda widget: widget.order)


async def for_user(user: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """Everything at once (the panels are also served one by one)."""
    return {
        "tasks": await task_summary(user["id"], now),
        "deals": await open_deals_by_stage(user["id"]),
        "clients": await recent_clients(user["id"]),
        "widgets": widgets(user),
    }
