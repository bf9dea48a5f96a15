"""The notification list, the header bell's badge, marking read."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.params import FromPath
from litestar.response import Template

from core.access import ANY_USER
from core.services import notifications
from core.web.controllers.base import current_user, render
from core.web.controllers.clients import redirect


def _safe_url(url: str) -> str:
    """Only local paths: a notification must not send anyone off-site."""
    return url if url.startswith("/") and not url.startswith("//") else "/notifications"


@get("/notifications", opt=ANY_USER)
async def notification_list(request: Request) -> Template:
    user = current_user(request)
    return render(
        request,
        "core/notifications/list.html",
        rows=await notifications.list_for_user(user["id"]),
        unread=await notifications.unread_count(user["id"]),
    )


@get("/notifications/badge", opt=ANY_USER, cache=False)
async def notification_badge(request: Request) -> Response[str]:
    """Polled by every open page: one COUNT, no template."""
    count = await notifications.unread_count(current_user(request)["id"])
    body = f'<span class="badge">{count}</span>' if count else ""
    return Response(body, media_type="text/html", headers={"Cache-Control": "no-store"})


@post("/notifications/{notification_id:int}/read", opt=ANY_USER, status_code=200)
async def notification_read(request: Request, notification_id: FromPath[int]) -> Response[Any]:
    row = await notifications.mark_read(current_user(request)["id"], notification_id)
    return redirect(request, _safe_url(row["url"] or ""))


@post("/notifications/read-all", opt=ANY_USER, status_code=200)
async def notification_read_all(request: Request) -> Response[Any]:
    await notifications.mark_all_read(current_user(request)["id"])
    return redirect(request, "/notifications")


HANDLERS = [notification_list, notification_badge, notification_read, notification_read_all]
