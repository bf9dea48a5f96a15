"""Domain events: what happened in the core, delivered to plugins after commit.

Services collect events while their transaction is open (`EventBuffer.emit`) and
the buffer dispatches them only when the transaction has committed, so a plugin
never reacts to a change that was rolled back.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import ClassVar

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class DomainEvent:
    name: ClassVar[str] = "event"
    actor_id: int | None = None
    """The user who caused the event, None for the system (jobs, imports)."""
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True, kw_only=True)
class ClientCreated(DomainEvent):
    name: ClassVar[str] = "client.created"
    client_id: int


@dataclass(frozen=True, kw_only=True)
class ClientUpdated(DomainEvent):
    name: ClassVar[str] = "client.updated"
    client_id: int
    changed: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ClientDeleted(DomainEvent):
    name: ClassVar[str] = "client.deleted"
    client_id: int


@dataclass(frozen=True, kw_only=True)
class DealCreated(DomainEvent):
    name: ClassVar[str] = "deal.created"
    deal_id: int
    client_id: int


@dataclass(frozen=True, kw_only=True)
class DealStageChanged(DomainEvent):
    name: ClassVar[str] = "deal.stage_changed"
    deal_id: int
    client_id: int
    from_stage_id: int
    to_stage_id: int


@dataclass(frozen=True, kw_only=True)
class DealWon(DomainEvent):
    name: ClassVar[str] = "deal.won"
    deal_id: int
    client_id: int


@dataclass(frozen=True, kw_only=True)
class DealLost(DomainEvent):
    name: ClassVar[str] = "deal.lost"
    deal_id: int
    client_id: int
    reason: str


@dataclass(frozen=True, kw_only=True)
class TaskCreated(DomainEvent):
    name: ClassVar[str] = "task.created"
    task_id: int
    assignee_id: int


@dataclass(frozen=True, kw_only=True)
class TaskCompleted(DomainEvent):
    name: ClassVar[str] = "task.completed"
    task_id: int
    assignee_id: int


@dataclass(frozen=True, kw_only=True)
class TaskDue(DomainEvent):
    name: ClassVar[str] = "task.due"
    task_id: int
    assignee_id: int


@dataclass(frozen=True, kw_only=True)
class SecurityAlert(DomainEvent):
    """A user viewed or exported more client cards in an hour than the install allows."""

    name: ClassVar[str] = "security.alert"
    user_id: int
    views: int
    exported_rows: int


Dispatcher = Callable[[DomainEvent], None]
_dispatcher: Dispatcher | None = None
_pending: contextvars.ContextVar[list[DomainEvent] | None] = contextvars.ContextVar(
    "kartoteka_pending_events", default=None
)


def set_dispatcher(dispatcher: Dispatcher | None) -> None:
    """Installed by the app/worker at start-up: it fans events out to the plugin hook."""
    global _dispatcher
    _dispatcher = dispatcher


def emit(event: DomainEvent) -> None:
    """Queue the event for after-commit delivery, or deliver now outside a unit of work."""
    pending = _pending.get()
    if pending is not None:
        pending.append(event)
    else:
        _deliver([event])


def _deliver(events: list[DomainEvent]) -> None:
    if _dispatcher is None:
        return
    for event in events:
        try:
            _dispatcher(event)
        except Exception:  # one broken plugin must not break the user's request
            log.exception("domain event %s: dispatch failed", event.name)


@asynccontextmanager
async def unit_of_work(transaction_factory: Callable[[], object]) -> AsyncIterator[None]:
    """Run a block in one DB transaction and deliver its events only after commit."""
    outer = _pending.get()
    if outer is not None:  # nested: the outermost unit delivers
        async with transaction_factory():  # type: ignore[attr-defined]
            yield
        return
    token = _pending.set([])
    try:
        async with transaction_factory():  # type: ignore[attr-defined]
            yield
        events = _pending.get() or []
    finally:
        _pending.reset(token)
    _deliver(events)
