"""Helpers every service uses: the write transaction, the clock, not-found."""

from __future__ import annotations

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
