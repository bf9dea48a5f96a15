"""The start page: panels and plugin widgets, each loaded by htmx on its own."""

from __future__ import annotations

from litestar import Request, get
from litestar.response import Template

from core.access import ANY_USER
from core.services import dashboard
from core.web.controllers.base import current_user, render


@get("/", opt=ANY_USER)
async def dashboard_page(request: Request) -> Template:
    return render(request, "core/dashboard.html", widgets=dashboard.widgets(current_user(request)))


@get("/dashboard/tasks", opt=ANY_USER)
async def dashboard_tasks(request: Request) -> Template:
    summary = await dashboard.task_summary(current_user(request)["id"])
    return render(request, "core/dashboard_tasks.html", summary=summary)


@get("/dashboard/deals", opt=ANY_USER)
async def dashboard_deals(request: Request) -> Template:
    rows = await dashboard.open_deals_by_stage(current_user(request)["id"])
    return render(request, "core/dashboard_deals.html", rows=rows)


@get("/dashboard/clients", opt=ANY_USER)
async def dashboard_clients(request: Request) -> Template:
    rows = await dashboard.recent_clients(current_user(request)["id"])
    return render(request, "core/dashboard_clients.html", rows=rows)


HANDLERS = [dashboard_page, dashboard_tasks, dashboard_deals, dashboard_clients]
