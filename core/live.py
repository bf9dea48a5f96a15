"""Live push to users' browsers: `publish` HTML now, every open tab of those users gets it.

A browser tab holds one server-sent-events stream (``GET /live``, see
`core.web.controllers.live`) that subscribes here for its user. `publish` reaches
every subscription of the named users in every process of the install:

- SQLite (embedded mode, one process): an in-memory fan-out. Safe to call from any
  thread or event loop of the process (the job worker's loop included).
- PostgreSQL (server mode: several web processes, the PBX connection in the scheduler
  process): ``NOTIFY kartoteka_live``; each process LISTENs on one connection of its
  own and fans out to its local subscribers. A notification holds 8000 bytes at most,
  so a larger message travels as numbered pieces of one transaction.

Delivery is best effort, like the browser's stream itself: a tab that is not
connected at the moment misses the message (a screen pop is only worth it now).

``event`` is the SSE event name. The base layout applies every `SWAP` event on any
page as htmx out-of-band swaps (elements with ``id`` and ``hx-swap-oob``; new
elements are appended to ``#live-popups`` with ``hx-swap-oob="beforeend:#live-popups"``);
other event names reach only page elements that ask for them
(``hx-trigger="sse:<event>"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

SWAP = "swap"
"""Event applied as out-of-band swaps on every page (the base layout listens to it)."""
CHANNEL = "kartoteka_live"
NOTIFY_LIMIT = 7900
"""Bytes of one NOTIFY payload we allow ourselves (PostgreSQL's hard limit is 8000)."""
PIECE_CHARS = 1900
"""Characters per piece of a large message: at most 4 bytes each in UTF-8, under the limit."""
QUEUE_SIZE = 200
"""Messages waiting for one slow tab; beyond that the oldest are dropped."""
PARTIAL_TTL = 30.0
"""Seconds a half-received large message is kept waiting for its other pieces."""


@dataclass(frozen=True)
class LiveMessage:
    event: str
    html: str


CLOSED = LiveMessage(event="", html="")
"""What `Subscription.next` returns when the server is stopping: end the stream."""


@dataclass(eq=False)
class Subscription:
    """One open stream (a browser tab) of one user."""

    user_id: int
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[LiveMessage] = field(
        default_factory=lambda: asyncio.Queue(maxsize=QUEUE_SIZE)
    )

    def put(self, message: LiveMessage) -> None:
        """Runs on the subscriber's loop; a tab that stopped reading loses the oldest."""
        if self.queue.full():
            self.queue.get_nowait()
            log.warning("live: user %s reads too slowly, dropped a message", self.user_id)
        self.queue.put_nowait(message)

    async def next(self, timeout: float) -> LiveMessage | None:
        """The next message, or None after ``timeout`` seconds of silence."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None


class Hub:
    """This process's subscriptions by user, and the fan-out to them."""

    def __init__(self) -> None:
        self._by_user: dict[int, set[Subscription]] = {}
        self._lock = threading.Lock()

    def add(self, subscription: Subscription) -> None:
        with self._lock:
            self._by_user.setdefault(subscription.user_id, set()).add(subscription)

    def remove(self, subscription: Subscription) -> None:
        with self._lock:
            subs = self._by_user.get(subscription.user_id)
            if subs is not None:
                subs.discard(subscription)
                if not subs:
                    del self._by_user[subscription.user_id]

    def close_all(self) -> None:
        """Tell every open stream of this process to end (the server is stopping)."""
        with self._lock:
            targets = [s for subs in self._by_user.values() for s in subs]
        for sub in targets:
            with contextlib.suppress(RuntimeError):
                sub.loop.call_soon_threadsafe(sub.put, CLOSED)

    def count(self, user_id: int | None = None) -> int:
        with self._lock:
            if user_id is not None:
                return len(self._by_user.get(user_id, ()))
            return sum(len(subs) for subs in self._by_user.values())

    def deliver(self, user_ids: Iterable[int], message: LiveMessage) -> None:
        """Hand the message to each subscription on its own loop (thread-safe)."""
        with self._lock:
            targets = [s for uid in set(user_ids) for s in self._by_user.get(uid, ())]
        for sub in targets:
            try:
                if _running_loop() is sub.loop:
                    sub.put(message)
                else:
                    sub.loop.call_soon_threadsafe(sub.put, message)
            except RuntimeError:  # its loop closed: the stream is gone, cleanup follows
                self.remove(sub)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


# --- PostgreSQL transport ------------------------------------------------------------


def encode_notifications(user_ids: list[int], message: LiveMessage) -> list[str]:
    """NOTIFY payloads for one message: one, or numbered pieces when it is large."""
    whole = json.dumps(
        {"u": user_ids, "e": message.event, "h": message.html},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    if len(whole.encode()) <= NOTIFY_LIMIT:
        return [whole]
    pieces = [whole[i : i + PIECE_CHARS] for i in range(0, len(whole), PIECE_CHARS)]
    message_id = uuid.uuid4().hex
    return [
        json.dumps({"m": message_id, "i": i, "n": len(pieces), "d": piece}, ensure_ascii=False)
        for i, piece in enumerate(pieces)
    ]


class Reassembler:
    """Turns NOTIFY payloads back into messages, joining the pieces of large ones."""

    def __init__(self) -> None:
        self._partial: dict[str, tuple[float, dict[int, str], int]] = {}

    def feed(self, payload: str) -> tuple[list[int], LiveMessage] | None:
        data = json.loads(payload)
        if "m" in data:
            now = time.monotonic()
            self._partial = {k: v for k, v in self._partial.items() if now - v[0] < PARTIAL_TTL}
            started, pieces, total = self._partial.get(data["m"], (now, {}, int(data["n"])))
            pieces[int(data["i"])] = data["d"]
            if len(pieces) < total:
                self._partial[data["m"]] = (started, pieces, total)
                return None
            self._partial.pop(data["m"], None)
            data = json.loads("".join(pieces[i] for i in range(total)))
        return [int(u) for u in data["u"]], LiveMessage(event=data["e"], html=data["h"])


class PostgresTransport:
    """NOTIFY to publish; one LISTEN connection per process, reconnecting on loss."""

    def __init__(self, dsn: str, hub: Hub) -> None:
        self.dsn = dsn
        self.hub = hub
        self._publishers: dict[asyncio.AbstractEventLoop, tuple[asyncio.Lock, list[Any]]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._reassembler = Reassembler()

    async def publish(self, user_ids: list[int], message: LiveMessage) -> None:
        payloads = encode_notifications(user_ids, message)
        lock, holder = self._publisher_slot()
        async with lock:
            for attempt in (1, 2):  # a connection the server dropped is replaced once
                try:
                    if not holder or holder[0].is_closed():
                        holder[:] = [await _connect(self.dsn)]
                    conn = holder[0]
                    if len(payloads) == 1:
                        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payloads[0])
                    else:
                        async with conn.transaction():  # pieces arrive together
                            for payload in payloads:
                                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
                    return
                except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
                    holder.clear()
                    if attempt == 2:
                        raise
                    log.info("live: publisher reconnects after %s", exc)

    def _publisher_slot(self) -> tuple[asyncio.Lock, list[Any]]:
        """One publishing connection per event loop (asyncpg connections belong to one)."""
        loop = asyncio.get_running_loop()
        for other in [lp for lp in self._publishers if lp.is_closed()]:
            del self._publishers[other]
        if loop not in self._publishers:
            self._publishers[loop] = (asyncio.Lock(), [])
        return self._publishers[loop]

    async def ensure_listening(self) -> None:
        """Start this process's listener (once) and wait until it listens."""
        loop = asyncio.get_running_loop()
        if self._listener is None or self._listener.done() or self._listener.get_loop() is not loop:
            self._listening = asyncio.Event()
            self._listener = loop.create_task(
                self._listen_forever(), name="kartoteka-live-listener"
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), 5)

    async def _listen_forever(self) -> None:
        pause = 0.5
        while True:
            conn = None
            try:
                conn = await _connect(self.dsn)
                lost = asyncio.get_running_loop().create_future()
                conn.add_termination_listener(partial(_resolve, lost))
                await conn.add_listener(CHANNEL, self._on_notify)
                self._listening.set()
                pause = 0.5
                await lost
                log.warning("live: LISTEN connection lost, reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("live: cannot LISTEN (%s), retrying in %.1fs", exc, pause)
            finally:
                self._listening.clear()
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.shield(conn.close(timeout=2))
            await asyncio.sleep(pause)
            pause = min(pause * 2, 10.0)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            decoded = self._reassembler.feed(payload)
        except (ValueError, KeyError, TypeError):
            log.warning("live: ignored a malformed notification")
            return
        if decoded is not None:
            self.hub.deliver(*decoded)

    async def close(self) -> None:
        """Close what this event loop owns (another loop's listener is its own business)."""
        loop = asyncio.get_running_loop()
        if self._listener is not None and self._listener.get_loop() is loop:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
        _lock, holder = self._publishers.pop(loop, (None, []))
        for conn in holder:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)


def _resolve(future: asyncio.Future[None], *_args: Any) -> None:
    if not future.done():
        future.set_result(None)


async def _connect(dsn: str) -> Any:
    return await asyncpg.connect(dsn, timeout=10)


# --- the process-wide channel -------------------------------------------------------

_hub = Hub()
_transport: PostgresTransport | None = None
_transport_dsn: str | None = None


def hub() -> Hub:
    return _hub


def _postgres() -> PostgresTransport | None:
    """The PostgreSQL transport when the install's database is PostgreSQL, else None."""
    global _transport, _transport_dsn
    from core.runtime import get_runtime

    settings = get_runtime().settings
    if settings.is_sqlite:
        return None
    if _transport is None or _transport_dsn != settings.database_url:
        _transport = PostgresTransport(settings.database_url, _hub)
        _transport_dsn = settings.database_url
    return _transport


def end_streams_on_exit() -> None:
    """Make the server's stop signals end the open streams first (call at app start-up).

    A stream never ends by itself, so a server stopping or restarting would wait for
    every open tab until its timeout; with this, the streams end at once and the
    browsers reconnect to the next server. Wraps the handlers the server (uvicorn)
    installed for SIGTERM and SIGINT; does nothing outside the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)
        if not callable(previous) or getattr(previous, "ends_live_streams", False):
            continue

        def handler(number: int, frame: Any, previous: Any = previous) -> None:
            # Not close_all() here: the interrupted code may hold the hub's lock.
            with contextlib.suppress(RuntimeError):  # that loop is closed already
                loop.call_soon_threadsafe(_hub.close_all)
            previous(number, frame)

        handler.ends_live_streams = True  # type: ignore[attr-defined]
        signal.signal(signum, handler)


async def publish(user_ids: Iterable[int], event: str, html: str) -> None:
    """Send ``html`` as SSE event ``event`` to every open tab of these users, in any process.

    Example::

        await publish([7, 9], SWAP, '<div id="notice" hx-swap-oob="true">Saved</div>')
    """
    ids = sorted({int(u) for u in user_ids})
    if not ids:
        return
    message = LiveMessage(event=event, html=html)
    transport = _postgres()
    if transport is None:
        _hub.deliver(ids, message)
    else:
        await transport.publish(ids, message)


@contextlib.asynccontextmanager
async def subscribe(user_id: int) -> AsyncIterator[Subscription]:
    """Receive what is published to this user while the block runs (one browser tab)."""
    transport = _postgres()
    if transport is not None:
        await transport.ensure_listening()
    subscription = Subscription(user_id=user_id, loop=asyncio.get_running_loop())
    _hub.add(subscription)
    try:
        yield subscription
    finally:
        _hub.remove(subscription)


async def close() -> None:
    """Stop listening and close the connections of the running event loop (app shutdown)."""
    if _transport is not None:
        await _transport.close()
