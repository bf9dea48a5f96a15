"""Who is calling (session cookie or bearer token) and whether they may call this route.

A raw ASGI middleware sets ``scope["user"]`` (a dict, or None), ``scope["access"]``
(`core.access.Access`, also the context variable services read), the locale and
the caller's address before any handler runs. The one guard, `require_access`,
reads what the route declares in ``opt``: `core.access.PUBLIC`, `ANY_USER`, or
``needs(permission)``. A route that declares nothing is refused to everyone, so a
forgotten declaration fails closed.
"""

from __future__ import annotations

import hashlib
from http.cookies import SimpleCookie
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.types import ASGIApp, Receive, Scope, Send

from core import access
from core.i18n import current_locale, current_timezone
from core.runtime import get_runtime
from core.services import audit, users
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
        await User.select(*User.all_columns(exclude=[User.password_hash, User.totp_secret]))
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
    """The request's user, or None."""
    return (await identify_with_role(scope))[0]


async def identify_with_role(
    scope: Scope,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The request's user and, for a browser session, their role's row (one query)."""
    authorization = _header(scope, b"authorization")
    if authorization.lower().startswith("bearer "):
        return await _user_for_bearer(authorization[7:].strip()), None
    if scope.get("path", "").startswith("/api/") and scope.get("method") not in ("GET", "HEAD"):
        return None, None  # the API is CSRF-exempt, so it must never act on a cookie alone
    cookie_header = _header(scope, b"cookie")
    if not cookie_header:
        return None, None
    cookies: SimpleCookie = SimpleCookie()
    try:
        cookies.load(cookie_header)
    except Exception:
        return None, None
    morsel = cookies.get(SESSION_COOKIE)
    identity = await users.session_identity(morsel.value) if morsel else None
    return identity or (None, None)


def auth_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "").startswith("/static/"):
            scope["user"] = None  # type: ignore[typeddict-unknown-key]
            await app(scope, receive, send)
            return
        user, role_row = await identify_with_role(scope)
        user_access = await access.for_user(user, role_row)
        scope["user"] = user  # type: ignore[typeddict-unknown-key]
        scope["access"] = user_access  # type: ignore[typeddict-unknown-key]
        settings = get_runtime().settings
        locale_token = current_locale.set((user or {}).get("locale") or settings.default_locale)
        tz_token = current_timezone.set(settings.timezone)
        address = (scope.get("client") or ("",))[0] or ""
        try:
            with access.acting_as(user_access), audit.from_address(address):
                await app(scope, receive, send)
        finally:
            current_locale.reset(locale_token)
            current_timezone.reset(tz_token)

    return middleware


async def require_access(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """Async although it awaits nothing: Litestar runs a plain guard in a worker thread."""
    opt = handler.opt
    if opt.get("public"):
        return
    if connection.scope.get("user") is None:
        raise NotAuthorizedException("login required")
    if opt.get("any_user"):
        return
    permission = opt.get("permission")
    if not permission:
        raise PermissionDeniedException("this page declares no permission")
    if not connection.scope["access"].can(permission):  # type: ignore[typeddict-item]
        raise PermissionDeniedException(f"needs the {permission} permission")
