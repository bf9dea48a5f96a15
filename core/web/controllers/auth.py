"""Login, logout and the user's language."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.params import FromQuery
from litestar.response import Redirect, Template

from core.access import ANY_USER, PUBLIC
from core.i18n import _
from core.runtime import get_runtime
from core.services import users
from core.services.users import SESSION_LIFETIME
from core.web.auth import SESSION_COOKIE
from core.web.controllers.base import current_user, form_data, render


def _safe_next(target: str) -> str:
    """Only local paths: a login link must not bounce the user to another site."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


@get("/login", opt=PUBLIC)
async def login_page(request: Request, next: FromQuery[str] = "/") -> Template:
    return render(request, "core/login.html", next=_safe_next(next), error=None, username="")


@post("/login", opt=PUBLIC, status_code=200)
async def login(request: Request) -> Response[Any]:
    data = await form_data(request)
    username, password = str(data.get("username", "")), str(data.get("password", ""))
    target = _safe_next(str(data.get("next", "/")))
    user = await users.authenticate(username, password)
    if user is None:
        return render(
            request,
            "core/login.html",
            status_code=400,
            next=target,
            username=username,
            error=_("Wrong user name or password."),
        )
    token = await users.start_session(user["id"])
    response = Redirect(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(SESSION_LIFETIME.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


@post("/logout", opt=ANY_USER, status_code=303)
async def logout(request: Request) -> Response[Any]:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await users.end_session(token)
    response = Redirect("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@post("/language", opt=ANY_USER, status_code=200)
async def set_language(request: Request) -> Response[Any]:
    data = await form_data(request)
    await users.set_locale(
        current_user(request)["id"], str(data.get("locale", "")), get_runtime().settings.languages
    )
    if request.headers.get("hx-request"):
        return Response(b"", headers={"HX-Refresh": "true"})
    return Redirect(request.headers.get("referer") or "/", status_code=303)


HANDLERS = [login_page, login, logout, set_language]
