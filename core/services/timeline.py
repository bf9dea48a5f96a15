"""The client timeline: everything that happened with a client, newest first."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from core import access
from core.db import fetch
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
    """One page of entries (keyset on occurred_at, id) and the cursor of the next.

    Raw SQL: every card view runs it, and Piccolo's query building cost more than the
    query itself (index ``core_timeline_client_time``).
    """
    me = access.current()
    # Names and deal owners as subqueries, not joins: the newest entries then come
    # straight off the index, 31 rows read however long the client's history is.
    sql = (
        "SELECT t.id, t.kind, t.occurred_at, t.payload, t.deal, "
        "(SELECT u.full_name FROM core_user u WHERE u.id = t.author) AS author_name "
        "FROM core_timeline t"
    )
    where, args = " WHERE t.client = {}", list[Any]([client_id])
    # Entries about deals the user may not see stay hidden.
    deals_visible, owner_ids = me.owner_sql(
        "deal", "(SELECT d.responsible FROM core_deal d WHERE d.id = t.deal)"
    )
    if deals_visible:
        where += f" AND (t.deal IS NULL OR {deals_visible})"
        args += owner_ids
    if deal_id is not None:
        where += " AND t.deal = {}"
        args.append(deal_id)
    position = decode_time_cursor(cursor) if cursor else None
    if position:
        when, entry_id = position
        where += " AND (t.occurred_at < {} OR (t.occurred_at = {} AND t.id < {}))"
        args += [when, when, entry_id]
    rows = await fetch(
        sql + where + " ORDER BY t.occurred_at DESC, t.id DESC LIMIT {}", *args, size + 1
    )
    hide_amounts = me.hides("deal.amount")
    entries = []
    for row in rows[:size]:
        # Everything the entry's HTML depends on besides language and time zone, so a
        # page can reuse it (core.web.timeline): the row as stored, and the redaction.
        row["render_key"] = (*row.values(), hide_amounts)
        row["occurred_at"] = as_utc(row["occurred_at"])
        payload = row["payload"]
        row["payload"] = json.loads(payload) if isinstance(payload, str) else payload or {}
        if hide_amounts:
            row["payload"].pop("amount_minor", None)
        entries.append(row)
    next_cursor = (
        encode_time_cursor(entries[-1]["occurred_at"], entries[-1]["id"])
        if len(rows) > size
        else None
    )
    return entries, next_cursor
