"""Task lists, the task form and page, completing and reopening."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Template

from core import access
from core.access import needs
from core.default_hooks import TASKS_EDIT, TASKS_VIEW
from core.services import dashboard, tasks, users
from core.services.common import NotFound, utcnow
from core.validation import ValidationError
from core.web.controllers.base import (
    current_user,
    form_data,
    is_htmx,
    redirect,
    render,
    visible_people,
)


def _default_due() -> str:
    """The next full hour, as the form's initial value."""
    now = utcnow().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return tasks.local_input_value(now)


def _id(value: Any) -> int | None:
    return int(value) if str(value or "").strip().isdigit() else None


async def _form_page(
    request: Request,
    values: dict[str, Any],
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Template:
    links = await tasks.link_names(_id(values.get("client")), _id(values.get("deal")))
    template = "core/tasks/_form.html" if is_htmx(request) else "core/tasks/form.html"
    return render(
        request,
        template,
        status_code=status_code,
        values={**values, "client": links["client"] or "", "deal": links["deal"] or ""},
        links=links,
        errors=errors or {},
        assignees=await users.list_users(),
        priorities=tasks.priority_labels(),
    )


def _back_url(client_id: Any) -> str:
    client = _id(client_id)
    return f"/clients/{client}" if client else "/tasks"


@get("/tasks", opt=needs(TASKS_VIEW))
async def task_list(
    request: Request, view: FromQuery[str] = "today", assignee: FromQuery[int | None] = None
) -> Template:
    """My tasks; a head (team scope) or a reader (all) may look at a colleague's."""
    user = current_user(request)
    who = assignee or user["id"]
    if not access.current().sees_owner("task", who):
        raise NotFound(who)
    view = view if view in tasks.VIEWS else "today"
    now = utcnow()
    people, rows, counts = await asyncio.gather(
        visible_people("task"), tasks.my_tasks(who, view, now), tasks.counts(who, now)
    )
    return render(
        request,
        "core/tasks/list.html",
        view=view,
        assignee=who,
        people=people if len(people) > 1 else [],
        rows=rows,
        counts=counts,
        count_cap=tasks.COUNT_CAP,
        limit=tasks.LIMIT,
        priorities=tasks.priority_labels(),
    )


@get("/tasks/new", opt=needs(TASKS_EDIT))
async def task_new(
    request: Request, client: FromQuery[int | None] = None, deal: FromQuery[int | None] = None
) -> Template:
    values = {
        "assignee": current_user(request)["id"],
        "priority": 2,
        "due_at": _default_due(),
        "client": client or "",
        "deal": deal or "",
    }
    return await _form_page(request, values)


@post("/tasks", opt=needs(TASKS_EDIT), status_code=200)
async def task_create(request: Request) -> Response[Any]:
    data = await form_data(request)
    try:
        task_id = await tasks.create_task(data, current_user(request)["id"])
    except ValidationError as exc:
        return await _form_page(request, data, exc.errors, status_code=422)
    task = await tasks.get_task(task_id)
    return redirect(request, _back_url(task["client"]))


@get("/tasks/{task_id:int}", opt=needs(TASKS_VIEW))
async def task_page(request: Request, task_id: FromPath[int]) -> Template:
    return render(
        request,
        "core/tasks/detail.html",
        task=await tasks.get_task(task_id),
        priorities=tasks.priority_labels(),
    )


@get("/tasks/{task_id:int}/edit", opt=needs(TASKS_EDIT))
async def task_edit(request: Request, task_id: FromPath[int]) -> Template:
    task = await tasks.get_task(task_id)
    values = {
        **task,
        "due_at": tasks.local_input_value(task["due_at"]),
        "client": task["client"] or "",
        "deal": task["deal"] or "",
    }
    return await _form_page(request, values)


@post("/tasks/{task_id:int}/edit", opt=needs(TASKS_EDIT), status_code=200)
async def task_update(request: Request, task_id: FromPath[int]) -> Response[Any]:
    await tasks.get_task(task_id)
    data = await form_data(request)
    try:
        await tasks.update_task(task_id, data, current_user(request)["id"])
    except ValidationError as exc:
        return await _form_page(request, {**data, "id": task_id}, exc.errors, status_code=422)
    return redirect(request, f"/tasks/{task_id}")


async def _after_change(request: Request, task_id: int, panel: str) -> Response[Any]:
    """What a complete/reopen answers: the panel or row it came from, or a redirect."""
    task = await tasks.get_task(task_id)
    user = current_user(request)
    if panel == "client" and task["client"] is not None:
        return render(
            request,
            "core/tasks/_client_tasks.html",
            client={"id": task["client"]},
            sections={"tasks": await tasks.open_for_client(task["client"])},
        )
    if panel == "dashboard":
        return render(
            request,
            "core/dashboard_tasks.html",
            summary=await dashboard.task_summary(user["id"]),
        )
    if is_htmx(request):
        return render(request, "core/tasks/_row.html", t=task, priorities=tasks.priority_labels())
    return redirect(request, f"/tasks/{task_id}")


@post("/tasks/{task_id:int}/complete", opt=needs(TASKS_EDIT), status_code=200)
async def task_complete(
    request: Request, task_id: FromPath[int], panel: FromQuery[str] = ""
) -> Response[Any]:
    await tasks.complete_task(task_id, current_user(request)["id"])
    return await _after_change(request, task_id, panel)


@post("/tasks/{task_id:int}/reopen", opt=needs(TASKS_EDIT), status_code=200)
async def task_reopen(
    request: Request, task_id: FromPath[int], panel: FromQuery[str] = ""
) -> Response[Any]:
    await tasks.reopen_task(task_id, current_user(request)["id"])
    return await _after_change(request, task_id, panel)


HANDLERS = [
    task_list,
    task_new,
    task_create,
    task_page,
    task_edit,
    task_update,
    task_complete,
    task_reopen,
]
