"""A Dramatiq broker that keeps its messages in a SQLite file.

Embedded mode has no Redis, and StubBroker keeps messages in memory, so a restart
would silently drop queued and delayed jobs. Here a message is a row that is deleted
only when the job is acknowledged: whatever a crash interrupts runs again after the
restart (at-least-once), so actors must be idempotent.

Embedded mode runs exactly one process, so one connection guarded by a lock is all
the concurrency there is; a claim is still a single UPDATE so that it stays atomic.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from dramatiq.broker import Broker, Consumer, MessageProxy
from dramatiq.common import current_millis, dq_name
from dramatiq.errors import DecodeError, QueueJoinTimeout, QueueNotFound
from dramatiq.message import Message
from dramatiq.middleware import Middleware

READY, TAKEN, DEAD = "ready", "taken", "dead"
DEAD_MESSAGE_TTL = 7 * 24 * 3600
"""Seconds a dead-lettered message is kept for inspection, as RedisBroker does."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    message BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'ready',
    enqueued_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_queue_state ON jobs (queue, state, id);
"""


class SQLiteBroker(Broker):
    """Persistent broker for a single process; ``path`` is the SQLite file."""

    def __init__(self, path: str | Path, middleware: list[Middleware] | None = None) -> None:
        super().__init__(middleware)
        self.path = Path(path)
        self.queues: set[str] = set()
        self._lock = threading.Lock()
        # Wakes idle consumers and join() as soon as this process changes a queue.
        self._changed = threading.Condition(self._lock)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: every statement commits on its own, nothing is left
        # half-done in an implicit transaction.
        self._conn = sqlite3.connect(
            self.path, timeout=30, check_same_thread=False, isolation_level=None
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)
        # Only one process uses the file, so a row still 'taken' was in the hands of a
        # process that is gone: without this it would never run.
        self._conn.execute("UPDATE jobs SET state = ? WHERE state = ?", (READY, TAKEN))
        self._conn.execute(
            "DELETE FROM jobs WHERE state = ? AND enqueued_at < ?",
            (DEAD, time.time() - DEAD_MESSAGE_TTL),
        )

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _execute(self, sql: str, params: Iterable[object] = ()) -> list[tuple]:
        with self._lock:
            rows = self._conn.execute(sql, tuple(params)).fetchall()
            self._changed.notify_all()
            return rows

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 30000) -> Consumer:
        if queue_name not in self.queues:
            raise QueueNotFound(queue_name)
        return _SQLiteConsumer(self, queue_name, prefetch, timeout)

    def declare_queue(self, queue_name: str) -> None:
        if queue_name in self.queues:
            return
        self.emit_before("declare_queue", queue_name)
        self.queues.add(queue_name)
        self.emit_after("declare_queue", queue_name)

        delayed_name = dq_name(queue_name)
        self.queues.add(delayed_name)
        self.delay_queues.add(delayed_name)
        self.emit_after("declare_delay_queue", delayed_name)

    def enqueue(self, message: Message, *, delay: int | None = None) -> Message:
        queue_name = message.queue_name
        if delay is not None:
            queue_name = dq_name(queue_name)
            message = message.copy(queue_name=queue_name, options={"eta": current_millis() + delay})
        if queue_name not in self.queues:
            raise QueueNotFound(queue_name)

        self.emit_before("enqueue", message, delay)
        self._execute(
            "INSERT INTO jobs (queue, message, state, enqueued_at) VALUES (?, ?, ?, ?)",
            (queue_name, message.encode(), READY, time.time()),
        )
        self.emit_after("enqueue", message, delay)
        return message

    def get_declared_queues(self) -> set[str]:
        return set(self.queues) - self.delay_queues

    def get_declared_delay_queues(self) -> set[str]:
        return self.delay_queues.copy()

    def flush(self, queue_name: str) -> None:
        self._execute("DELETE FROM jobs WHERE queue = ?", (queue_name,))

    def flush_all(self) -> None:
        for queue_name in self.queues:
            self.flush(queue_name)

    def dead_messages(self, queue_name: str) -> list[Message]:
        """Messages that failed for good; kept for a week so an admin can see why."""
        rows = self._execute(
            "SELECT message FROM jobs WHERE queue = ? AND state = ? ORDER BY id",
            (queue_name, DEAD),
        )
        return [Message.decode(data) for (data,) in rows]

    def join(self, queue_name: str, timeout: int | None = None) -> None:
        """Wait until the queue and its delay queue have nothing ready or in progress.

        ``timeout`` is in milliseconds, as everywhere in Dramatiq. Dead messages do not
        count, so a job that failed for good does not make this hang.
        """
        if queue_name not in self.queues:
            raise QueueNotFound(queue_name)
        deadline = None if timeout is None else time.monotonic() + timeout / 1000
        sql = "SELECT 1 FROM jobs WHERE queue IN (?, ?) AND state IN (?, ?) LIMIT 1"
        params = (queue_name, dq_name(queue_name), READY, TAKEN)
        with self._lock:
            while self._conn.execute(sql, params).fetchone():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise QueueJoinTimeout(queue_name)
                # Bounded wait: a change made through another connection sends no signal.
                self._changed.wait(0.1 if remaining is None else min(remaining, 0.1))


class _SQLiteMessageProxy(MessageProxy):
    def __init__(self, message: Message, row_id: int) -> None:
        super().__init__(message)
        self.row_id = row_id


class _SQLiteConsumer(Consumer):
    def __init__(self, broker: SQLiteBroker, queue_name: str, prefetch: int, timeout: int):
        self.broker = broker
        self.queue_name = queue_name
        self.timeout = timeout
        # Slots for messages handed out but not yet acked, like StubBroker's consumer.
        self._slots = threading.Semaphore(prefetch)
        self._held: set[int] = set()

    def __next__(self) -> MessageProxy | None:
        deadline = time.monotonic() + self.timeout / 1000
        if not self._slots.acquire(timeout=self.timeout / 1000):
            return None
        broker = self.broker
        with broker._lock:
            while True:
                # fetchall, not fetchone: the UPDATE commits only once its cursor is done.
                rows = broker._conn.execute(
                    "UPDATE jobs SET state = ? WHERE id = ("
                    "  SELECT id FROM jobs WHERE queue = ? AND state = ? ORDER BY id LIMIT 1"
                    ") RETURNING id, message",
                    (TAKEN, self.queue_name, READY),
                ).fetchall()
                if rows:
                    row_id, data = rows[0]
                    try:
                        message = Message.decode(data)
                    except DecodeError:
                        broker.logger.exception("Undecodable message %s moved to dead.", row_id)
                        broker._conn.execute(
                            "UPDATE jobs SET state = ? WHERE id = ?", (DEAD, row_id)
                        )
                        continue
                    self._held.add(row_id)
                    return _SQLiteMessageProxy(message, row_id)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._slots.release()
                    return None
                broker._changed.wait(min(remaining, 1.0))

    def _settle(self, row_ids: Iterable[int], sql: str, *params: object) -> None:
        with self.broker._lock:
            for row_id in row_ids:
                self.broker._conn.execute(sql, (*params, row_id))
                if row_id in self._held:
                    self._held.discard(row_id)
                    self._slots.release()
            self.broker._changed.notify_all()

    def ack(self, message: MessageProxy) -> None:
        self._settle([_row_id(message)], "DELETE FROM jobs WHERE id = ?")

    def nack(self, message: MessageProxy) -> None:
        self._settle([_row_id(message)], "UPDATE jobs SET state = ? WHERE id = ?", DEAD)

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        ids = [_row_id(message) for message in messages]
        self._settle(ids, "UPDATE jobs SET state = ? WHERE state = ? AND id = ?", READY, TAKEN)


def _row_id(message: MessageProxy) -> int:
    return message.row_id  # type: ignore[attr-defined]
