"""The client timeline: everything that happened with a client, newest first."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from core import access
from core.services.common import as_utc, decode_time_cursor, encode_time_cursor, utcnow
from core.tables import Client, TimelineEntry

PAGE_SIZE = 30


async def add_entry(
    client_id: int,
    kind: str,
    payload: dict[str, Any] | None = None,
    author_id: int | None = None,
    deal_id: int | None = None,
    occurred_at: datetime | None = None,
) -> int:
    """Record an entry and bump the client's last activity (used for sorting)."""
    when = occurred_at or utcnow()
    rows = await TimelineEntry.insert(
        TimelineEntry(
            client=client_id,
            deal=deal_id,
            kind=kind,
            occurred_at=when,
            author=author_id,
            payload=json.dumps(payload or {}, ensure_ascii=False, default=str),
        )
    ).returning(TimelineEntry.id)
    await Client.update({Client.last_activity_at: when}).where(
        (Client.id == client_id) & (Client.last_activity_at < when)
    )
    return int(rows[0]["id"])


async def page(
    client_id: int, cursor: str | None = None, deal_id: int | None = None, size: int = PAGE_SIZE
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of entries (keyset on occurred_at, id) and the cursor of the next."""
    query = TimelineEntry.select(
        TimelineEntry.id,
        TimelineEntry.kind,
        TimelineEntry.occurred_at,
        TimelineEntry.payload,
        TimelineEntry.deal,
        TimelineEntry.author.full_name.as_alias("author_name"),
    ).where(TimelineEntry.client == client_id)
    if deal_id is not None:
        query = query.where(TimelineEntry.deal == deal_id)
    me = access.current()
    deals_visible = me.owner_filter("deal", TimelineEntry.deal.responsible)
    if deals_visible is not None:  # entries about deals the user may not see stay hidden
        query = query.where(TimelineEntry.deal.is_null() | deals_visible)
    position = decode_time_cursor(cursor) if cursor else None
    if position:
        when, entry_id = position
        query = query.where(
            (TimelineEntry.occurred_at < when)
            | ((TimelineEntry.occurred_at == when) & (TimelineEntry.id < entry_id))
        )
    rows = await query.order_by(TimelineEntry.occurred_at, TimelineEntry.id, ascending=False).limit(
        size + 1
    )
    entries = []
    for row in rows[:size]:
        row["occurred_at"] = as_utc(row["occurred_at"])
        payload = row["payload"]
        row["payload"] = json.loads(payload) if isinstance(payload, str) else payload or {}
        if me.hides("deal.amount"):
            row["payload"].pop("amount_minor", None)
        entries.append(row)
    next_cursor = (
        encode_time_cursor(entries[-1]["occurred_at"], entries[-1]["id"])
        if len(rows) > size
        else None
    )
    return entries, next_cursor
