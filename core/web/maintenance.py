"""While maintenance is on, every page answers 503 with the reason (health checks excepted)."""

from __future__ import annotations

import json

from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    Scope,
    Send,
)

from core import maintenance

PASS_THROUGH = ("/healthz", "/readyz", "/static/")


def maintenance_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        state = maintenance.current() if scope["type"] == "http" else None
        if state is None or scope.get("path", "").startswith(PASS_THROUGH):
            await app(scope, receive, send)
            return
        wants_json = scope.get("path", "").startswith("/api/")
        if wants_json:
            body = json.dumps({"status_code": 503, "detail": state["reason"]}).encode()
            content_type = b"application/json"
        else:
            body = _page(state["reason"]).encode()
            content_type = b"text/html; charset=utf-8"
        start: HTTPResponseStartEvent = {
            "type": "http.response.start",
            "status": 503,
            "headers": [(b"content-type", content_type), (b"retry-after", b"60")],
        }
        finish: HTTPResponseBodyEvent = {
            "type": "http.response.body",
            "body": body,
            "more_body": False,
        }
        await send(start)
        await send(finish)

    return middleware


def _page(reason: str) -> str:
    """Plain HTML without templates: the database and the catalogs may be mid-restore."""
    from html import escape

    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>Kartoteka</title>'
        '<link rel="stylesheet" href="/static/kartoteka.css"></head><body><main class="page">'
        "<h1>Kartoteka: maintenance · техническое обслуживание</h1>"
        f"<p>{escape(reason)}</p></main></body></html>"
    )
