"""Helpers every service uses: the write transaction, the clock, not-found."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from piccolo.engine.sqlite import SQLiteEngine, TransactionType

from core.db import get_engine
from core.events import unit_of_work


class NotFound(LookupError):
    """The record does not exist, was deleted, or the user may not see it."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def _write_transaction() -> Any:
    engine = get_engine()
    if isinstance(engine, SQLiteEngine):
        # IMMEDIATE takes the write lock up front: no "database is locked" half-way.
        return engine.transaction(transaction_type=TransactionType.immediate, allow_nested=True)
    return engine.transaction(allow_nested=True)


@asynccontextmanager
async def write() -> AsyncIterator[None]:
    """One atomic write; domain events emitted inside are delivered after commit."""
    async with unit_of_work(_write_transaction):
        yield


def as_utc(value: Any) -> Any:
    """SQLite hands timestamps back naive; they are stored in UTC."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def encode_time_cursor(occurred_at: datetime, entry_id: int) -> str:
    """Keyset position (time, id) for "newest first" lists: the timeline, the audit log."""
    raw = json.dumps([as_utc(occurred_at).isoformat(), entry_id])
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_time_cursor(cursor: str) -> tuple[datetime, int] | None:
    """None for a cursor that was tampered with or mangled: the list starts over."""
    try:
        when, entry_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(when), int(entry_id)
    except (ValueError, TypeError):
        return None
