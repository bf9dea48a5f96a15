"""Tasks: things to do by a time, for a user, optionally about a client or a deal.

Days are days of the install's time zone (``settings.timezone``): a manager in Moscow
expects "today" to end at midnight Moscow time, not UTC. The views of `my_tasks`:

* ``overdue``  - not done, due before the start of today;
* ``today``    - not done, due today (including earlier today: such a task is late,
  and the list shows its time in red, but it stays in "today" so the two views
  never overlap);
* ``upcoming`` - not done, due after today;
* ``done``     - done, most recently completed first.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from core import access, events
from core.db import fetch
from core.i18n import _
from core.runtime import get_runtime
from core.services import audit, timeline
from core.services.common import NotFound, as_utc, utcnow, write
from core.tables import Client, Deal, Task, User
from core.validation import FieldError, Form, choice, integer, text

VIEWS = ("today", "overdue", "upcoming", "done")
PRIORITIES = (1, 2, 3)
"""Low, normal, high."""
LIMIT = 100


def install_zone() -> ZoneInfo:
    return ZoneInfo(get_runtime().settings.timezone)


def priority_labels() -> dict[int, str]:
    return {1: _("Low"), 2: _("Normal"), 3: _("High")}


def day_bounds(now: datetime | None = None) -> tuple[datetime, datetime]:
    """Start of today and of tomorrow (install time zone), as UTC datetimes."""
    zone = install_zone()
    today = as_utc(now or utcnow()).astimezone(zone).date()
    return _midnight(today, zone), _midnight(today + timedelta(days=1), zone)


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def local_input_value(value: datetime | None) -> str:
    """A stored (UTC) time as an HTML datetime-local value in the install time zone."""
    if value is None:
        return ""
    return as_utc(value).astimezone(install_zone()).strftime("%Y-%m-%dT%H:%M")


def parse_due(value: Any) -> datetime:
    """'YYYY-MM-DDTHH:MM' (datetime-local, install time zone) -> an aware UTC datetime."""
    if isinstance(value, datetime):
        parsed = value
    else:
        raw = "" if value is None else str(value).strip()
        if not raw:
            raise FieldError(_("This field is required."))
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            raise FieldError(_("Enter a date and time.")) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=install_zone())
    if not 2000 <= parsed.year <= 2200:
        raise FieldError(_("Enter a date and time."))
    return parsed.astimezone(UTC)


def _priority(value: Any) -> int:
    return int(choice([str(p) for p in PRIORITIES])(str(value).strip()))


async def validate_task(data: dict[str, Any], default_assignee: int | None) -> dict[str, Any]:
    """The cleaned column values of a task form; raises ValidationError.

    Without an assignee the task goes to `default_assignee` (the author on create,
    the current assignee on update).
    """
    form = Form(data)
    form.field("title", text(255, required=True))
    form.field("description", text(5000))
    form.field("due_at", parse_due)
    form.field("priority", _priority, default="2")
    assignee = form.field("assignee", integer(minimum=1, required=False))
    if "assignee" not in form.errors:
        assignee = assignee or default_assignee
        active = assignee is not None and await User.exists().where(
            (User.id == assignee) & (User.active.eq(True))
        )
        if not active:
            form.error("assignee", _("Choose an active user."))
    client_id = form.field("client", integer(minimum=1, required=False))
    deal_id = form.field("deal", integer(minimum=1, required=False))
    me = access.current()
    if client_id is not None:
        client = (
            await Client.select(Client.responsible)
            .where((Client.id == client_id) & Client.deleted_at.is_null())
            .first()
        )
        if client is None or not me.sees_owner("client", client["responsible"]):
            form.error("client", _("This client does not exist."))
    if deal_id is not None:
        deal = (
            await Deal.select(Deal.client, Deal.responsible)
            .where((Deal.id == deal_id) & Deal.deleted_at.is_null())
            .first()
        )
        if deal is None or not me.sees_owner("deal", deal["responsible"]):
            form.error("deal", _("This deal does not exist."))
        elif client_id is None:
            client_id = deal["client"]
        elif deal["client"] != client_id:
            form.error("deal", _("This deal belongs to another client."))
    form.raise_if_invalid()
    cleaned = form.cleaned
    return {
        "title": cleaned["title"],
        "description": cleaned["description"],
        "due_at": cleaned["due_at"],
        "priority": cleaned["priority"],
        "assignee": assignee,
        "client": client_id,
        "deal": deal_id,
    }


async def _user_name(user_id: int | None) -> str:
    if user_id is None:
        return ""
    row = await User.select(User.full_name).where(User.id == user_id).first()
    return row["full_name"] if row else ""


async def create_task(data: dict[str, Any], actor_id: int | None) -> int:
    values = await validate_task(data, actor_id)
    assignee_name = await _user_name(values["assignee"])
    async with write():
        rows = await Task.insert(
            Task(**values, created_by=actor_id, created_at=utcnow())
        ).returning(Task.id)
        task_id = int(rows[0]["id"])
        if values["client"] is not None:
            await timeline.add_entry(
                values["client"],
                "task.created",
                {
                    "task_id": task_id,
                    "title": values["title"],
                    # Local time of the install, so the entry reads right without parsing.
                    "due_at": values["due_at"].astimezone(install_zone()).isoformat(),
                    "assignee": assignee_name,
                },
                actor_id,
                deal_id=values["deal"],
            )
        await audit.record("task.create", "task", task_id, values["title"], audit.diff({}, values))
        events.emit(
            events.TaskCreated(task_id=task_id, assignee_id=values["assignee"], actor_id=actor_id)
        )
    return task_id


async def update_task(task_id: int, data: dict[str, Any], actor_id: int | None) -> None:
    before = await get_task(task_id)
    values = await validate_task(data, before["assignee"])
    columns: dict[Any, Any] = {getattr(Task, key): value for key, value in values.items()}
    if values["due_at"] != before["due_at"]:
        columns[Task.reminded_at] = None  # rescheduled: remind again at the new time
    async with write():
        await Task.update(columns).where(Task.id == task_id)
        changes = audit.diff(before, values)
        if changes:
            await audit.record("task.update", "task", task_id, values["title"], changes)


async def complete_task(task_id: int, actor_id: int | None) -> bool:
    """Mark done; False (and nothing written) if it already was."""
    task = await get_task(task_id)
    if task["done_at"] is not None:
        return False
    now = utcnow()
    async with write():
        claimed = (
            await Task.update({Task.done_at: now, Task.completed_by: actor_id})
            .where((Task.id == task_id) & Task.done_at.is_null())
            .returning(Task.id)
        )
        if not claimed:
            return False
        await audit.record("task.complete", "task", task_id, task["title"])
        if task["client"] is not None:
            await timeline.add_entry(
                task["client"],
                "task.completed",
                {"task_id": task_id, "title": task["title"]},
                actor_id,
                deal_id=task["deal"],
            )
        events.emit(
            events.TaskCompleted(task_id=task_id, assignee_id=task["assignee"], actor_id=actor_id)
        )
    return True


async def reopen_task(task_id: int, actor_id: int | None) -> bool:
    """Undo completion; False (and nothing written) if the task is open."""
    task = await get_task(task_id)
    if task["done_at"] is None:
        return False
    async with write():
        reopened = (
            await Task.update({Task.done_at: None, Task.completed_by: None})
            .where((Task.id == task_id) & Task.done_at.is_not_null())
            .returning(Task.id)
        )
        if not reopened:
            return False
        await audit.record("task.reopen", "task", task_id, task["title"])
        if task["client"] is not None:
            await timeline.add_entry(
                task["client"],
                "task.reopened",
                {"task_id": task_id, "title": task["title"]},
                actor_id,
                deal_id=task["deal"],
            )
    return True


def _select() -> Any:
    return Task.select(
        *Task.all_columns(),
        Task.assignee.full_name.as_alias("assignee_name"),
        Task.client.name.as_alias("client_name"),
        Task.deal.title.as_alias("deal_title"),
        Task.completed_by.full_name.as_alias("completed_by_name"),
    )


def _normalise(row: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    for key in ("due_at", "done_at", "reminded_at", "created_at"):
        row[key] = as_utc(row[key])
    row["overdue"] = row["done_at"] is None and row["due_at"] < (now or utcnow())
    return row


async def get_task(task_id: int) -> dict[str, Any]:
    """NotFound also when the current user may not see the task (no id leaks)."""
    row = await _select().where(Task.id == task_id).first()
    if row is None or not access.current().sees_owner("task", row["assignee"], row["created_by"]):
        raise NotFound(task_id)
    return _normalise(row)


async def open_for_client(client_id: int) -> list[dict[str, Any]]:
    """Open tasks of a client, soonest due first (the client card's panel).

    Raw SQL: every card view runs it (Piccolo's query building cost more than the query).
    """
    visible, owner_ids = access.current().owner_sql("task", "t.assignee", "t.created_by")
    rows = await fetch(
        "SELECT t.*, a.full_name AS assignee_name, c.name AS client_name, "
        "d.title AS deal_title, cb.full_name AS completed_by_name FROM core_task t "
        "LEFT JOIN core_user a ON a.id = t.assignee "
        "LEFT JOIN core_client c ON c.id = t.client "
        "LEFT JOIN core_deal d ON d.id = t.deal "
        "LEFT JOIN core_user cb ON cb.id = t.completed_by "
        "WHERE t.client = {} AND t.done_at IS NULL"
        + (f" AND {visible}" if visible else "")
        + " ORDER BY t.due_at, t.id LIMIT {}",
        client_id,
        *owner_ids,
        LIMIT,
    )
    now = utcnow()
    return [_normalise(row, now) for row in rows]


def _scoped(condition: Any) -> Any:
    """Tasks are visible to whoever may see their assignee's or their author's records."""
    visible = access.current().owner_filter("task", Task.assignee, Task.created_by)
    return condition if visible is None else condition & visible


def _view_condition(view: str, user_id: int, now: datetime) -> Any:
    start, end = day_bounds(now)
    mine = Task.assignee == user_id
    if view == "done":
        return mine & Task.done_at.is_not_null()
    open_ = mine & Task.done_at.is_null()
    if view == "overdue":
        return open_ & (Task.due_at < start)
    if view == "upcoming":
        return open_ & (Task.due_at >= end)
    return open_ & (Task.due_at >= start) & (Task.due_at < end)


async def my_tasks(
    user_id: int, view: str = "today", now: datetime | None = None, limit: int = LIMIT
) -> list[dict[str, Any]]:
    """The user's tasks of one view (see the module docstring), at most `limit`."""
    now = as_utc(now) if now else utcnow()
    view = view if view in VIEWS else "today"
    query = _select().where(_view_condition(view, user_id, now))
    if view == "done":
        query = query.order_by(Task.done_at, Task.id, ascending=False)
    else:
        query = query.order_by(Task.due_at, Task.id)
    return [_normalise(row, now) for row in await query.limit(limit)]


COUNT_CAP = 99
"""A tab badge counts this far and then shows "99+": a manager with years of tasks
must not pay for counting all of them on every visit."""


async def counts(user_id: int, now: datetime | None = None) -> dict[str, int]:
    """How many open tasks each view holds, up to ``COUNT_CAP + 1`` (the tab badges;
    the "done" tab shows none)."""
    now = as_utc(now) if now else utcnow()
    views = [view for view in VIEWS if view != "done"]

    async def capped(view: str) -> int:
        query = Task.select(Task.id).where(_view_condition(view, user_id, now))
        return len(await query.limit(COUNT_CAP + 1))

    return dict(zip(views, await asyncio.gather(*map(capped, views)), strict=True))


async def link_names(client_id: int | None, deal_id: int | None) -> dict[str, Any]:
    """Names the task form shows for its (hidden) client and deal ids."""
    names: dict[str, Any] = {"client": client_id, "deal": deal_id, "client_name": ""}
    names["deal_title"] = ""
    if deal_id:
        deal = await Deal.select(Deal.title, Deal.client).where(Deal.id == deal_id).first()
        if deal:
            names["deal_title"] = deal["title"]
            names["client"] = client_id or deal["client"]
    if names["client"]:
        client = await Client.select(Client.name).where(Client.id == names["client"]).first()
        names["client_name"] = client["name"] if client else ""
    return names
