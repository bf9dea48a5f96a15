"""Who is calling: session cookie (browser) or bearer token (JSON API).

A raw ASGI middleware sets ``scope["user"]`` (a dict, or None) and the request's
locale before any handler runs; the `require_login` guard turns "no user" into 401,
which the exception handlers render as a redirect to /login for pages.
"""

from __future__ import annotations

import hashlib
from http.cookies import SimpleCookie
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.types import ASGIApp, Receive, Scope, Send

from core.i18n import current_locale, current_timezone
from core.runtime import get_runtime
from core.services import users
from core.services.common import utcnow
from core.tables import ApiToken, User

SESSION_COOKIE = "kartoteka_session"


async def _user_for_bearer(token: str) -> dict[str, Any] | None:
    token_hash = hashlib.sha256(token.encode()).hexdigest()
    row = (
        await ApiToken.select(ApiToken.id, ApiToken.user)
        .where(ApiToken.token_hash == token_hash)
        .first()
    )
    if row is None:
        return None
    user = (
        await User.select(*User.all_columns(exclude=[User.password_hash]))
        .where((User.id == row["user"]) & User.active.eq(True))
        .first()
    )
    if user is not None:
        await ApiToken.update({ApiToken.last_used_at: utcnow()}).where(ApiToken.id == row["id"])
    return user


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return ""


async def identify(scope: Scope) -> dict[str, Any] | None:
    authorization = _header(scope, b"authorization")
    if authorization.lower().startswith("bearer "):
        return await _user_for_bearer(authorization[7:].strip())
    if scope.get("path", "").startswith("/api/") and scope.get("method") not in ("GET", "HEAD"):
        return None  # the API is CSRF-exempt, so it must never act on a cookie alone
    cookie_header = _header(scope, b"cookie")
    if not cookie_header:
        return None
    cookies: SimpleCookie = SimpleCookie()
    try:
        cookies.load(cookie_header)
    except Exception:
        return None
    morsel = cookies.get(SESSION_COOKIE)
    return await users.user_for_session(morsel.value) if morsel else None


def auth_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "").startswith("/static/"):
            scope["user"] = None  # type: ignore[typeddict-unknown-key]
            await app(scope, receive, send)
            return
        user = await identify(scope)
        scope["user"] = user  # type: ignore[typeddict-unknown-key]
        settings = get_runtime().settings
        locale_token = current_locale.set((user or {}).get("locale") or settings.default_locale)
        tz_token = current_timezone.set(settings.timezone)
        try:
            await app(scope, receive, send)
        finally:
            current_locale.reset(locale_token)
            current_timezone.reset(tz_token)

    return middleware


def require_login(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    if handler.opt.get("public"):
        return
    if connection.scope.get("user") is None:
        raise NotAuthorizedException("login required")


def require_role(*roles: str) -> Any:
    def guard(connection: ASGIConnection, _handler: BaseRouteHandler) -> None:
        user = connection.scope.get("user")
        if not user or user["role"] not in roles:
            raise PermissionDeniedException("not allowed for your role")

    return guard


def require_writer(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """Read-only users may look but not change anything."""
    user = connection.scope.get("user")
    if (
        connection.scope.get("method") not in ("GET", "HEAD", "OPTIONS")
        and user
        and user["role"] == "readonly"
    ):
        raise PermissionDeniedException("read-only account")
