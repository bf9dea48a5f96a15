"""Login throttling, counted from the audit log.

Failed logins are audit entries anyway (``login.failure``), so the log is also the
counter: no second table to keep in step, and every web process sees the same
numbers. The index on ``(action, occurred_at)`` keeps the count to the last few
minutes of failures. An account is locked after ``login_failures_per_account``
failures within ``login_lockout_minutes`` (a successful login starts it afresh);
an address after ``login_failures_per_address`` (never reset by a success, or one
valid account would unlock guessing at all the others). The account counts by the
typed name, so a name that does not exist locks exactly like one that does.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from typing import Any

from core.runtime import get_runtime
from core.services import audit
from core.services.common import as_utc, utcnow, write
from core.tables import AuditEntry

SUCCESS = "login.success"
FAILURE = "login.failure"
BLOCKED = "login.blocked"
"""An attempt refused by the lockout; logged, but not counted (it would extend the lockout)."""


def account_name(username: str) -> str:
    """The typed name as it is logged and counted (AuditEntry.actor_name holds 200)."""
    return username.strip()[:200]


async def _unlock_time(condition: Any, limit: int, window: timedelta) -> datetime | None:
    """When the limit-th newest failure leaves the window, or None if under the limit."""
    if limit <= 0:
        return None
    rows = (
        await AuditEntry.select(AuditEntry.occurred_at)
        .where(condition)
        .order_by(AuditEntry.occurred_at, ascending=False)
        .limit(limit)
    )
    if len(rows) < limit:
        return None
    return as_utc(rows[-1]["occurred_at"]) + window


async def _last_success(name: str, since: datetime) -> datetime:
    row = (
        await AuditEntry.select(AuditEntry.occurred_at)
        .where(
            (AuditEntry.action == SUCCESS)
            & (AuditEntry.occurred_at > since)
            & (AuditEntry.actor_name == name)
        )
        .order_by(AuditEntry.occurred_at, ascending=False)
        .first()
    )
    return as_utc(row["occurred_at"]) if row else since


async def wait_minutes(username: str, address: str) -> int:
    """Minutes until this account and address may try again; 0 when they may now."""
    settings = get_runtime().settings
    window = timedelta(minutes=settings.login_lockout_minutes)
    now = utcnow()
    since = now - window
    unlocks: list[datetime] = []
    name = account_name(username)
    if name:
        start = await _last_success(name, since)
        account = (
            (AuditEntry.action == FAILURE)
            & (AuditEntry.occurred_at > start)
            & (AuditEntry.actor_name == name)
        )
        unlock = await _unlock_time(account, settings.login_failures_per_account, window)
        if unlock:
            unlocks.append(unlock)
    if address:
        by_address = (
            (AuditEntry.action == FAILURE)
            & (AuditEntry.occurred_at > since)
            & (AuditEntry.ip == address)
        )
        unlock = await _unlock_time(by_address, settings.login_failures_per_address, window)
        if unlock:
            unlocks.append(unlock)
    if not unlocks or max(unlocks) <= now:
        return 0
    return max(1, math.ceil((max(unlocks) - now).total_seconds() / 60))


async def record_failure(username: str, user: dict[str, Any] | None, reason: str) -> None:
    """A wrong password or code; ``user`` is the account when the name exists."""
    async with write():
        await audit.record(
            FAILURE,
            "user",
            user["id"] if user else "",
            reason,
            actor=user,
            actor_name=account_name(username),
        )


async def record_blocked(username: str, user: dict[str, Any] | None, minutes: int) -> None:
    async with write():
        await audit.record(
            BLOCKED,
            "user",
            user["id"] if user else "",
            f"locked out for {minutes} more minute(s)",
            actor=user,
            actor_name=account_name(username),
        )


async def record_success(user: dict[str, Any], totp_step: int | None) -> None:
    """Call inside the write that creates the session; the step guards against code reuse."""
    changes = {"totp_step": [None, totp_step]} if totp_step is not None else None
    summary = "password and one-time code" if totp_step is not None else "password"
    await audit.record(
        SUCCESS,
        "user",
        user["id"],
        summary,
        changes,
        actor=user,
        actor_name=user["username"],
    )


async def last_totp_step(user_id: int) -> int:
    """The time step of the code used at the user's latest login (-1 if none)."""
    row = (
        await AuditEntry.select(AuditEntry.changes)
        .where((AuditEntry.actor_id == user_id) & (AuditEntry.action == SUCCESS))
        .order_by(AuditEntry.occurred_at, ascending=False)
        .first()
    )
    if row is None:
        return -1
    changes = row["changes"]
    if isinstance(changes, str):
        changes = json.loads(changes or "{}")
    step = (changes or {}).get("totp_step")
    return int(step[1]) if isinstance(step, list) and step[1] is not None else -1
