"""The audit log: an append-only record of who did what, from where.

Entries are written inside the same transaction as the change they describe, so
a change is never committed without its entry. Nothing here updates or deletes.

The same entries feed the anomaly alert: client cards viewed plus rows exported by
one user in the last hour, counted on the index ``core_audit_actor``
(actor_id, action, occurred_at).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from core import access, events, i18n
from core.db import fetch
from core.runtime import get_runtime
from core.services.common import as_utc, decode_time_cursor, encode_time_cursor, utcnow, write
from core.services.notifications import notify
from core.tables import AuditEntry, User

client_address: ContextVar[str] = ContextVar("kartoteka_client_address", default="")
"""The caller's IP address, set by the web middleware for the request."""

system_actor: ContextVar[str] = ContextVar("kartoteka_system_actor", default="system")
"""Who acts when no user does: "system" for jobs, ``cli:<os user>`` for the command line."""


@contextmanager
def from_address(address: str) -> Iterator[None]:
    token = client_address.set(address)
    try:
        yield
    finally:
        client_address.reset(token)


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    """Field-level changes ``{field: [before, after]}`` for the fields in ``after``."""
    return {
        key: [_plain(before.get(key)), _plain(value)]
        for key, value in after.items()
        if before.get(key) != value
    }


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    return value if isinstance(value, str | int | float | bool | list | dict | None) else str(value)


async def record(
    action: str,
    object_type: str = "",
    object_id: int | str | None = "",
    summary: str = "",
    changes: dict[str, Any] | None = None,
    *,
    actor: dict[str, Any] | None = None,
    actor_name: str | None = None,
    flagged: bool = False,
    at: datetime | None = None,
) -> int:
    """Append one entry; the actor defaults to the user of the current request."""
    user = actor if actor is not None else access.current().user
    rows = await AuditEntry.insert(
        AuditEntry(
            occurred_at=at or utcnow(),
            actor_id=int(user["id"]) if user else None,
            actor_name=actor_name
            if actor_name is not None
            else (user["username"] if user else system_actor.get()),
            action=action,
            object_type=object_type,
            object_id="" if object_id is None else str(object_id),
            summary=summary[:1000],
            changes=changes or {},
            ip=client_address.get(),
            flagged=flagged,
        )
    ).returning(AuditEntry.id)
    return int(rows[0]["id"])


# --- browsing ---------------------------------------------------------------------------

PAGE_SIZE = 50
PREFIX_MARK = "*"
"""An action filter ending in it matches a family: ``client.*`` finds client.view, ..."""


@dataclass
class AuditQuery:
    actor: int | None = None
    action: str = ""
    object_type: str = ""
    object_id: str = ""
    date_from: date | None = None
    """First day shown, a day of the install's time zone."""
    date_to: date | None = None
    """Last day shown (inclusive)."""
    flagged: bool = False
    cursor: str = ""
    size: int = PAGE_SIZE


def day_start(day: date) -> datetime:
    """Midnight of a day in the install's time zone, as UTC: what "period" filters compare."""
    zone = ZoneInfo(get_runtime().settings.timezone)
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def _conditions(query: AuditQuery) -> list[Any]:
    conditions: list[Any] = []
    if query.actor is not None:
        conditions.append(AuditEntry.actor_id == query.actor)
    if query.action.endswith(PREFIX_MARK):
        prefix = query.action.removesuffix(PREFIX_MARK)
        # a range, not LIKE: "_" in action names is no wildcard and the index still applies
        conditions.append((AuditEntry.action >= prefix) & (AuditEntry.action < prefix + "\uffff"))
    elif query.action:
        conditions.append(AuditEntry.action == query.action)
    if query.object_type:
        conditions.append(AuditEntry.object_type == query.object_type)
    if query.object_id:
        conditions.append(AuditEntry.object_id == query.object_id)
    if query.date_from:
        conditions.append(AuditEntry.occurred_at >= day_start(query.date_from))
    if query.date_to:
        conditions.append(AuditEntry.occurred_at < day_start(query.date_to + timedelta(days=1)))
    if query.flagged:
        conditions.append(AuditEntry.flagged.eq(True))
    return conditions


def _changes(value: Any) -> dict[str, Any]:
    """The JSON column as a dict (SQLite hands it back as text)."""
    return json.loads(value) if isinstance(value, str) and value else value or {}


def _load(row: dict[str, Any]) -> dict[str, Any]:
    row["occurred_at"] = as_utc(row["occurred_at"])
    row["changes"] = _changes(row.get("changes"))
    return row


async def list_entries(query: AuditQuery) -> tuple[list[dict[str, Any]], str | None]:
    """One page, newest first, keyset-paged on (occurred_at, id) (index core_audit_time)."""
    select = AuditEntry.select()
    for condition in _conditions(query):
        select = select.where(condition)
    position = decode_time_cursor(query.cursor) if query.cursor else None
    if position:
        when, last_id = position
        select = select.where(
            (AuditEntry.occurred_at < when)
            | ((AuditEntry.occurred_at == when) & (AuditEntry.id < last_id))
        )
    rows = await select.order_by(AuditEntry.occurred_at, AuditEntry.id, ascending=False).limit(
        query.size + 1
    )
    page = [_load(row) for row in rows[: query.size]]
    next_cursor = None
    if len(rows) > query.size:
        next_cursor = encode_time_cursor(page[-1]["occurred_at"], page[-1]["id"])
    return page, next_cursor


async def _distinct(column: Literal["action", "object_type"]) -> list[str]:
    """Distinct values of an indexed column by hopping through the index (a "loose index
    scan"): one lookup per value instead of reading every row of a log that grows daily."""
    rows = await fetch(
        f"""WITH RECURSIVE seen(value) AS (
            SELECT MIN({column}) FROM core_audit
            UNION ALL
            SELECT (SELECT MIN({column}) FROM core_audit WHERE {column} > seen.value)
            FROM seen WHERE seen.value IS NOT NULL
        ) SELECT value FROM seen WHERE value IS NOT NULL AND value <> ''"""
    )
    return [row["value"] for row in rows]


async def actions() -> list[str]:
    """Every action the log holds, for the filter's select (index core_audit_action)."""
    return await _distinct("action")


async def object_types() -> list[str]:
    """Every object type the log holds (index core_audit_object)."""
    return await _distinct("object_type")


# --- client-base protection -------------------------------------------------------------

VIEW = "client.view"
EXPORT = "export"
ANOMALY = "security.anomaly"
ANOMALY_WINDOW = timedelta(hours=1)


async def exported_rows(user_id: int, since: datetime, *, client_data_only: bool = False) -> int:
    """Rows the user exported since a moment: the sum over their "export" entries.

    ``client_data_only`` leaves out exports of the audit log itself, which hold no
    client base (the anomaly alert counts client data; the daily limit counts all).
    """
    query = AuditEntry.select(AuditEntry.changes).where(
        (AuditEntry.actor_id == user_id)
        & (AuditEntry.action == EXPORT)
        & (AuditEntry.occurred_at >= since)
    )
    if client_data_only:
        query = query.where(AuditEntry.object_type != "audit")
    total = 0
    for row in await query:
        total += int(_changes(row["changes"]).get("rows") or 0)
    return total


async def _pace(user_id: int, since: datetime) -> tuple[int, int]:
    """Distinct cards viewed and client rows exported since a moment, in one round trip
    (it runs on every card view)."""
    rows = await fetch(
        "SELECT 'views' AS kind, COUNT(DISTINCT object_id) AS n, NULL AS changes "
        "FROM core_audit WHERE actor_id = {} AND action = {} AND occurred_at >= {} "
        "UNION ALL "
        "SELECT 'export', 0, changes FROM core_audit "
        "WHERE actor_id = {} AND action = {} AND occurred_at >= {} AND object_type <> 'audit'",
        user_id,
        VIEW,
        since,
        user_id,
        EXPORT,
        since,
    )
    views = sum(int(row["n"]) for row in rows if row["kind"] == "views")
    exported = sum(
        int(_changes(row["changes"]).get("rows") or 0) for row in rows if row["kind"] == "export"
    )
    return views, exported


# One INSERT, atomic by itself (no transaction: on SQLite no wait for BEGIN IMMEDIATE),
# that also tells whether the viewer opened this card earlier in the window; the
# literal action lets both databases use the partial index core_audit_card_view.
_VIEW_SQL = (
    "INSERT INTO core_audit (occurred_at, actor_id, actor_name, action, object_type, "
    "object_id, summary, changes, ip, flagged) "
    "VALUES ({}, {}, {}, 'client.view', 'client', {}, '', {}, {}, {}) "
    "RETURNING CASE WHEN EXISTS (SELECT 1 FROM core_audit seen "
    "WHERE seen.action = 'client.view' AND seen.actor_id = {} AND seen.object_id = {} "
    "AND seen.occurred_at >= {} AND seen.occurred_at < {}) THEN 1 ELSE 0 END AS seen"
)


async def record_view(client_id: int) -> None:
    """Log that the current user opened a client card, then check their pace.

    Only a first view of a card in the window can raise the pace (it counts distinct
    cards; exports check it themselves), so a repeat skips the check: reopening the
    card one works on all day costs one statement.
    """
    user = access.current().user
    if user is None:  # jobs and the CLI are not a person browsing the base
        return
    now = utcnow()
    user_id, object_id = int(user["id"]), str(client_id)
    rows = await fetch(
        _VIEW_SQL,
        now,
        user_id,
        user["username"],
        object_id,
        "{}",
        client_address.get(),
        False,
        user_id,
        object_id,
        now - ANOMALY_WINDOW,
        now,
    )
    if not rows[0]["seen"]:
        await check_activity(user)


async def check_activity(user: dict[str, Any]) -> bool:
    """Alert the admins once an hour when a user views or exports too many client cards.

    Counts the distinct client cards the user opened in the last hour (reopening one
    card is not copying the base) plus the rows of their exports in that hour;
    past ``settings.anomaly_cards_per_hour`` (and unless the user was already
    reported within the hour) writes a flagged "security.anomaly" entry, notifies
    every active admin and emits `SecurityAlert`. Returns whether it alerted.
    """
    settings = get_runtime().settings
    user_id = int(user["id"])
    since = utcnow() - ANOMALY_WINDOW
    views, exported = await _pace(user_id, since)
    if views + exported <= settings.anomaly_cards_per_hour:
        return False
    async with write():
        if await AuditEntry.exists().where(
            (AuditEntry.actor_id == user_id)
            & (AuditEntry.action == ANOMALY)
            & (AuditEntry.occurred_at >= since)
        ):
            return False
        numbers = {
            "views": views,
            "exported_rows": exported,
            "threshold": settings.anomaly_cards_per_hour,
        }
        await record(
            ANOMALY,
            "user",
            user_id,
            i18n.gettext(
                "%(views)s client cards viewed and %(rows)s rows exported in the last hour "
                "(alert threshold %(threshold)s)",
                views=views,
                rows=exported,
                threshold=settings.anomaly_cards_per_hour,
            ),
            numbers,
            actor=user,
            flagged=True,
        )
        await _notify_admins(user, views, exported)
        events.emit(
            events.SecurityAlert(
                actor_id=user_id, user_id=user_id, views=views, exported_rows=exported
            )
        )
    return True


async def _notify_admins(user: dict[str, Any], views: int, exported: int) -> None:
    """An in-app alert for every active admin, each in their own language."""
    default_locale = get_runtime().settings.default_locale
    admins = await User.select(User.id, User.locale).where(
        (User.role == access.ADMIN) & User.active.eq(True)
    )
    for admin in admins:
        token = i18n.current_locale.set(admin["locale"] or default_locale)
        try:
            text = i18n.gettext(
                "Unusual activity: %(name)s viewed %(views)s client cards and exported "
                "%(rows)s rows in the last hour.",
                name=f"{user['full_name']} ({user['username']})",
                views=views,
                rows=exported,
            )
        finally:
            i18n.current_locale.reset(token)
        await notify(admin["id"], "security", text, f"/admin/audit?actor={user['id']}")
