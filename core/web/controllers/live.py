"""The live stream of a browser tab: what `core.live.publish` sends to its user.

One stream per tab, opened by the base layout (htmx-ext-sse). A comment line every
`HEARTBEAT_SECONDS` keeps proxies from closing an idle stream; at each heartbeat the
session is checked again, so a tab of a user who logged out or was deactivated
stops receiving. When the tab closes, the server sees the disconnect, the stream is
cancelled and its subscription removed. When the server stops, every stream ends
at once (`core.live.end_streams_on_exit`). The browser reconnects by itself after
a network loss or a server restart (``retry`` tells it how soon).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, get
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.types import Scope

from core import live
from core.access import ANY_USER
from core.web.auth import identify
from core.web.controllers.base import current_user

HEARTBEAT_SECONDS = 15.0
RETRY_MS = 2000
"""How soon the browser reconnects after the stream broke."""


async def _still_logged_in(scope: Scope, user_id: int) -> bool:
    user = await identify(scope)
    return bool(user) and int(user["id"]) == user_id  # type: ignore[index]


async def _messages(scope: Scope, user_id: int) -> AsyncIterator[ServerSentEventMessage]:
    async with live.subscribe(user_id) as subscription:
        yield ServerSentEventMessage(data=None, comment="connected", retry=RETRY_MS)
        while True:
            message = await subscription.next(timeout=HEARTBEAT_SECONDS)
            if message is live.CLOSED:  # the server is stopping; the browser reconnects
                return
            if message is not None:
                yield ServerSentEventMessage(event=message.event, data=message.html)
                continue
            if not await _still_logged_in(scope, user_id):
                return
            yield ServerSentEventMessage(data=None, comment="ping")


@get("/live", opt=ANY_USER, cache=False, include_in_schema=False)
async def live_stream(request: Request[Any, Any, Any]) -> ServerSentEvent:
    user_id = int(current_user(request)["id"])
    return ServerSentEvent(
        _messages(request.scope, user_id),
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


HANDLERS = [live_stream]
