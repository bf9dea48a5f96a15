"""Browser-side protection added to every response, and the forced password change.

The Content-Security-Policy allows scripts, styles and requests only from our own
origin, so injected markup cannot run code or send data elsewhere; templates
therefore carry no inline scripts, ``style=`` attributes or ``hx-on``. The one
exception is the Swagger UI under /api/schema, which Litestar renders with an
inline script and loads from a CDN. Cookies get ``Secure`` when the request came
over HTTPS or the install says it sits behind a TLS proxy (``secure_cookies``).

A user whose password an administrator reset (``must_change_password``) is sent
to /profile/password from every page until they pick their own.

Headers and cookie flags are added by a ``before_send`` hook (`add_security_headers`),
which sees every response, errors included; the redirect is a middleware running
inside `core.web.auth.auth_middleware`, which has identified the user.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from litestar.types import ASGIApp, HTTPResponseStartEvent, Message, Receive, Scope, Send

from core.runtime import get_runtime

_POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "connect-src": "'self'",
    "frame-ancestors": "'none'",
    "form-action": "'self'",
    "base-uri": "'self'",
    "object-src": "'none'",
}
SWAGGER_CDN = "https://cdn.jsdelivr.net"
"""Where Litestar's SwaggerRenderPlugin loads Swagger UI's script, styles and icon from."""
API_DOCS_PREFIX = "/api/schema"


def _policy(rules: dict[str, str]) -> bytes:
    return "; ".join(f"{name} {value}" for name, value in rules.items()).encode()


CSP = _policy(_POLICY)
API_DOCS_CSP = _policy(
    {
        **_POLICY,
        "script-src": f"'self' 'unsafe-inline' {SWAGGER_CDN}",
        "style-src": f"'self' 'unsafe-inline' {SWAGGER_CDN}",
        "img-src": f"'self' data: {SWAGGER_CDN}",
    }
)
_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"x-content-type-options", b"nosniff"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]

PASSWORD_PAGE = "/profile/password"
_OPEN_BEFORE_PASSWORD_CHANGE = (
    PASSWORD_PAGE,
    "/logout",
    "/login",
    "/static/",
    "/language",
    "/api/",
)
"""The JSON API stays open: it authenticates with tokens, not with the password."""


def _headers_for(path: str) -> list[tuple[bytes, bytes]]:
    csp = API_DOCS_CSP if path.startswith(API_DOCS_PREFIX) else CSP
    return [(b"content-security-policy", csp), *_HEADERS]


def _secure_cookie(value: bytes) -> bytes:
    attributes = [part.strip().lower() for part in value.split(b";")[1:]]
    return value if b"secure" in attributes else value + b"; Secure"


async def add_security_headers(message: Message, scope: Scope) -> None:
    """A ``before_send`` hook, so error pages (CSRF refusals, unknown paths) get them too.

    Async although it awaits nothing: Litestar runs a plain function hook in a worker
    thread, a hand-off on every message of every response."""
    if message["type"] != "http.response.start":
        return
    secure = scope.get("scheme") == "https" or get_runtime().settings.secure_cookies
    headers = [
        (key, _secure_cookie(value) if secure and key.lower() == b"set-cookie" else value)
        for key, value in message.get("headers", [])
    ]
    present = {key.lower() for key, _value in headers}
    headers += [h for h in _headers_for(scope.get("path", "")) if h[0] not in present]
    message["headers"] = headers


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return ""


def _must_change_password(scope: Scope) -> bool:
    user = scope.get("user")  # type: ignore[typeddict-item]
    path = scope.get("path", "")
    return bool(
        user
        and user.get("must_change_password")
        and not path.startswith(_OPEN_BEFORE_PASSWORD_CHANGE)
    )


async def _to_password_page(scope: Scope, send: Send) -> None:
    """303 for a page; htmx follows HX-Redirect, except the password page's own polling."""
    headers: list[tuple[bytes, bytes]] = [(b"content-length", b"0")]
    if not _header(scope, b"hx-request"):
        status = 303
        headers.append((b"location", PASSWORD_PAGE.encode()))
    elif urlsplit(_header(scope, b"hx-current-url")).path == PASSWORD_PAGE:
        status = 204
    else:
        status = 200
        headers.append((b"hx-redirect", PASSWORD_PAGE.encode()))
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": status,
        "headers": headers,
    }
    await send(start)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def password_change_middleware(app: ASGIApp) -> ASGIApp:
    """Sends a user who must change their password to the password page first."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _must_change_password(scope):
            await _to_password_page(scope, send)
            return
        await app(scope, receive, send)

    return middleware
