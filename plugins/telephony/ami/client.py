"""An asyncio AMI client: connect, log in, send actions, receive events.

Replies are matched to actions by ``ActionID`` (events and replies interleave on the
one socket). Events go to a bounded queue: when the consumer falls behind, reading
stops and TCP pushes back on Asterisk instead of memory growing without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from plugins.telephony.ami.protocol import AmiMessage, AmiParser, encode_action

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
EVENT_QUEUE_SIZE = 10_000


class AmiError(Exception):
    """The PBX cannot be reached or talked to; the message says why in plain words."""


class AmiAuthError(AmiError):
    """The PBX refused the user name or secret."""


class AmiConnectionLost(AmiError):
    """The socket closed or went silent."""


@dataclass(frozen=True)
class AmiCredentials:
    host: str
    port: int
    username: str
    secret: str


class AmiClient:
    """One AMI session. Use ``async with AmiClient(...) as ami:`` or `connect`/`close`."""

    def __init__(
        self,
        credentials: AmiCredentials,
        *,
        events: str = "call",
        connect_timeout: float = 10.0,
        action_timeout: float = 10.0,
        keepalive: float = 30.0,
    ) -> None:
        self.credentials = credentials
        self.events_mask = events
        self.connect_timeout = connect_timeout
        self.action_timeout = action_timeout
        self.keepalive = keepalive
        self.parser = AmiParser()
        self.queue: asyncio.Queue[AmiMessage | None] = asyncio.Queue(EVENT_QUEUE_SIZE)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[str, asyncio.Future[AmiMessage]] = {}
        self._collecting: dict[str, list[AmiMessage]] = {}
        self._ids = itertools.count(1)
        self._prefix = uuid.uuid4().hex[:8]
        self._tasks: list[asyncio.Task[None]] = []
        self._last_data = time.monotonic()
        self._closed = asyncio.Event()
        self.close_reason = ""

    @property
    def version(self) -> str:
        return self.parser.version

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._closed.is_set()

    async def __aenter__(self) -> AmiClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the socket, read the banner and log in; raises AmiError with the reason."""
        creds = self.credentials
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(creds.host, creds.port), self.connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            raise AmiError(
                f"cannot connect to {creds.host}:{creds.port}: {exc or 'timeout'}"
            ) from exc
        self._last_data = time.monotonic()
        self._tasks.append(asyncio.create_task(self._read_loop(), name="ami-read"))
        try:
            reply = await self.send_action(
                "Login", Username=creds.username, Secret=creds.secret, Events=self.events_mask
            )
        except AmiError:
            await self.close()
            raise
        if reply.response.lower() != "success":
            await self.close()
            raise AmiAuthError(
                f"the PBX refused the login: {reply.get('Message') or reply.response}"
            )
        if not self.version:
            await self.close()
            raise AmiError("the server did not greet like Asterisk (no AMI banner)")
        if self.keepalive:
            self._tasks.append(asyncio.create_task(self._keepalive_loop(), name="ami-ping"))

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.write(encode_action("Logoff", [("ActionID", self._next_id())]))
                writer.close()
                await asyncio.wait_for(writer.wait_closed(), 2)
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        await asyncio.gather(*(t for t in self._tasks if t is not current), return_exceptions=True)
        self._tasks.clear()
        self._lost("closed")

    def _next_id(self) -> str:
        return f"kartoteka-{self._prefix}-{next(self._ids)}"

    async def send_action(self, action: str, **fields: str | int) -> AmiMessage:
        """Send an action and wait for its ``Response`` (matched by ActionID)."""
        action_id = str(fields.pop("ActionID", "") or self._next_id())
        reply = await self._send(action, action_id, fields)
        return reply

    async def send_list_action(self, action: str, **fields: str | int) -> list[AmiMessage]:
        """An action answered by ``EventList: start``, item events and a ``...Complete``."""
        action_id = self._next_id()
        self._collecting[action_id] = []
        try:
            reply = await self._send(action, action_id, fields, until_complete=True)
            if reply.response.lower() != "success":
                raise AmiError(f"{action} failed: {reply.get('Message') or reply.response}")
            return self._collecting[action_id]
        finally:
            self._collecting.pop(action_id, None)

    async def _send(
        self,
        action: str,
        action_id: str,
        fields: dict[str, str | int],
        until_complete: bool = False,
    ) -> AmiMessage:
        if self._writer is None or self._closed.is_set():
            raise AmiConnectionLost(self.close_reason or "not connected")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[AmiMessage] = loop.create_future()
        key = f"{action_id}:complete" if until_complete else action_id
        self._pending[key] = future
        if until_complete:
            reply_future: asyncio.Future[AmiMessage] = loop.create_future()
            self._pending[action_id] = reply_future
        pairs = [("ActionID", action_id), *((k, str(v)) for k, v in fields.items())]
        try:
            self._writer.write(encode_action(action, pairs))
            await self._writer.drain()
            if until_complete:
                reply = await asyncio.wait_for(reply_future, self.action_timeout)
                if reply.response.lower() != "success":
                    return reply
                await asyncio.wait_for(future, self.action_timeout)
                return reply
            return await asyncio.wait_for(future, self.action_timeout)
        except TimeoutError:
            raise AmiError(f"no answer to {action} within {self.action_timeout:g} s") from None
        except (ConnectionError, OSError) as exc:
            raise AmiConnectionLost(str(exc)) from exc
        finally:
            self._pending.pop(key, None)
            self._pending.pop(action_id, None)

    async def events(self) -> AsyncIterator[AmiMessage]:
        """Every event until the connection ends (then AmiConnectionLost)."""
        while True:
            message = await self.queue.get()
            if message is None:
                raise AmiConnectionLost(self.close_reason or "connection closed")
            yield message

    async def wait_closed(self) -> str:
        await self._closed.wait()
        return self.close_reason

    def _lost(self, reason: str) -> None:
        if self._closed.is_set():
            return
        self.close_reason = reason
        self._closed.set()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(AmiConnectionLost(reason))
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)
        if self.queue.full():  # the end marker must get through even behind a backlog
            self._tasks.append(asyncio.create_task(self.queue.put(None)))

    async def _read_loop(self) -> None:
        assert self._reader is not None
        reason = "the PBX closed the connection"
        try:
            while True:
                data = await self._reader.read(READ_CHUNK)
                if not data:
                    break
                self._last_data = time.monotonic()
                for message in self.parser.feed(data):
                    await self._dispatch(message)
        except (ConnectionError, OSError) as exc:
            reason = f"connection lost: {exc}"
        except asyncio.CancelledError:
            reason = "closed"
            raise
        finally:
            self._lost(reason)

    async def _dispatch(self, message: AmiMessage) -> None:
        action_id = message.action_id
        kind = message.pairs[0][0].lower()  # OriginateResponse events carry Response: too
        if kind == "response":
            future = self._pending.get(action_id)
            if future is not None and not future.done():
                future.set_result(message)
            return
        if action_id in self._collecting:
            if message.get("EventList").lower() == "complete":
                future = self._pending.get(f"{action_id}:complete")
                if future is not None and not future.done():
                    future.set_result(message)
            else:
                self._collecting[action_id].append(message)
            return
        if kind == "event":
            await self.queue.put(message)  # blocks when full: TCP backpressure

    async def _keepalive_loop(self) -> None:
        """Ping when the line is quiet; a PBX that stops answering is a lost connection."""
        while True:
            await asyncio.sleep(self.keepalive / 3)
            if time.monotonic() - self._last_data < self.keepalive:
                continue
            if self.queue.full():
                continue  # we are the slow side, not the PBX
            try:
                await self.send_action("Ping")
            except AmiError as exc:
                log.warning("AMI keepalive failed: %s", exc)
                await self.close_transport(f"the PBX stopped answering: {exc}")
                return

    async def close_transport(self, reason: str) -> None:
        """Drop the socket without a Logoff (it is not answering anyway)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        self._lost(reason)
