"""In-app notifications: the bell in the header and the notifications page."""

from __future__ import annotations

from typing import Any

from core.services.common import NotFound, as_utc, utcnow, write
from core.tables import Notification


async def notify(user_id: int, kind: str, text: str, url: str = "") -> int:
    """Add a notification for a user; returns its id. Joins an open write if any."""
    async with write():
        rows = await Notification.insert(
            Notification(
                user=user_id, kind=kind, text=text[:500], url=url[:500], created_at=utcnow()
            )
        ).returning(Notification.id)
    return int(rows[0]["id"])


async def unread_count(user_id: int) -> int:
    """The bell's number: one COUNT, called by every page once a minute."""
    return int(
        await Notification.count().where(
            (Notification.user == user_id) & Notification.read_at.is_null()
        )
    )


async def list_for_user(user_id: int, limit: int = 50) -> list[dict[str, Any]]:
    rows = (
        await Notification.select()
        .where(Notification.user == user_id)
        .order_by(Notification.created_at, Notification.id, ascending=False)
        .limit(limit)
    )
    for row in rows:
        row["created_at"] = as_utc(row["created_at"])
        row["read_at"] = as_utc(row["read_at"])
    return rows


async def mark_read(user_id: int, notification_id: int) -> dict[str, Any]:
    """Mark one of the user's own notifications read; NotFound for anyone else's."""
    row = (
        await Notification.select()
        .where((Notification.id == notification_id) & (Notification.user == user_id))
        .first()
    )
    if row is None:
        raise NotFound(notification_id)
    if row["read_at"] is None:
        now = utcnow()
        async with write():
            await Notification.update({Notification.read_at: now}).where(
                (Notification.id == notification_id) & Notification.read_at.is_null()
            )
        row["read_at"] = now
    return row


async def mark_all_read(user_id: int) -> None:
    async with write():
        await Notification.update({Notification.read_at: utcnow()}).where(
            (Notification.user == user_id) & Notification.read_at.is_null()
        )
