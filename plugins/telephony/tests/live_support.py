"""A real uvicorn server on the test's event loop, and a reader of its live stream."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from tests.support import login


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` over TCP until the block ends; yields the base URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server._serve())  # serve() would take over Ctrl-C
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@dataclass
class Event:
    event: str
    data: str
    comment: str


class LiveReader:
    """Reads server-sent events from an open ``GET /live`` response."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self, timeout: float = 5.0) -> Event:
        return await asyncio.wait_for(self._read_event(), timeout)

    async def _read_event(self) -> Event:
        event, data, comments = "message", [], []
        async for line in self._lines:
            if line == "":
                if data or comments:
                    return Event(event, "\n".join(data), "\n".join(comments))
                continue
            field, _sep, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "":
                comments.append(value)
            elif field == "event":
                event = value
            elif field == "data":
                data.append(value)
        raise EOFError("the stream ended")

    async def next_data(self, timeout: float = 5.0) -> Event:
        """The next event that carries data (heartbeats skipped)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = await self.next(max(0.01, deadline - loop.time()))
            if event.data:
                return event


@asynccontextmanager
async def live_stream(http: httpx.AsyncClient) -> AsyncIterator[LiveReader]:
    async with http.stream("GET", "/live") as response:
        assert response.status_code == 200, response.status_code
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = LiveReader(response)
        first = await reader.next()
        assert first.comment == "connected"
        yield reader


@asynccontextmanager
async def logged_in(base_url: str, username: str, password: str) -> AsyncIterator[Any]:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        await login(http, username, password)
        yield http


async def wait_until(condition: Any, timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)
