"""A ``Server-Timing`` header on every response of a route (an unknown path's 404 is
answered before any middleware): how long the application took to produce it (every
middleware, the handler, the template), shown by browsers' developer tools and read by
the benchmark, whose targets are server time."""

from __future__ import annotations

import time

from litestar.types import ASGIApp, Message, Receive, Scope, Send


def server_timing_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                elapsed_ms = (time.perf_counter() - started) * 1000
                headers = list(message.get("headers") or [])
                headers.append((b"server-timing", f"app;dur={elapsed_ms:.2f}".encode()))
                message["headers"] = headers
            await send(message)

        await app(scope, receive, timed_send)

    return middleware
