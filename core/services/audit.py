"""The audit log: an append-only record of who did what, from where.

Entries are written inside the same transaction as the change they describe, so
a change is never committed without its entry. Nothing here updates or deletes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from core import access
from core.services.common import utcnow
from core.tables import AuditEntry

client_address: ContextVar[str] = ContextVar("kartoteka_client_address", default="")
"""The caller's IP address, set by the web middleware for the request."""

_SYSTEM_ACTOR = "system"


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
            else (user["username"] if user else _SYSTEM_ACTOR),
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
