"""Running the job worker: as threads of the web process, or as its own process.

Embedded mode (no BROKER_URL) runs a small worker inside the web process on the
SQLite queue. Server mode runs ``kartoteka worker`` processes next to Redis or
RabbitMQ; they must know every actor, so they load the same plugins as the web app.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import dramatiq
from dramatiq.broker import Broker

from core import events
from core.runtime import Runtime, build_runtime, set_runtime
from core.settings import Settings

log = logging.getLogger(__name__)

STOP_TIMEOUT_MS = 30_000
"""How long a stopping worker waits for running jobs; the rest run again after restart."""


def load_actors(runtime: Runtime) -> None:
    """Declare every actor of the core and the enabled plugins on the broker.

    Plugin hook modules were imported when the runtime loaded the plugins; actor
    modules that hooks import lazily (like the core's own reminders) are reached
    through the ``scheduled_jobs`` hook.
    """
    import core.jobs.reminders  # noqa: F401

    runtime.plugins.collect("scheduled_jobs")


class EmbeddedWorker:
    """A Dramatiq worker as threads of the web process (embedded mode).

    Call `start()` from the app's start-up after the broker is set up and the actor
    modules are imported, and `stop()` from its shutdown.
    """

    def __init__(
        self, broker: Broker | None = None, *, worker_threads: int = 2, worker_timeout: int = 1000
    ) -> None:
        from core.jobs.broker import get_job_broker

        self.broker = broker or get_job_broker()
        self.worker_threads = worker_threads
        self.worker_timeout = worker_timeout
        self.worker: dramatiq.Worker | None = None

    def start(self) -> None:
        if self.worker is not None:
            return
        self.worker = dramatiq.Worker(
            self.broker, worker_threads=self.worker_threads, worker_timeout=self.worker_timeout
        )
        self.worker.start()

    def stop(self, timeout: int = STOP_TIMEOUT_MS) -> None:
        worker, self.worker = self.worker, None
        if worker is None:
            return
        worker.stop(timeout=timeout)
        # Worker.start() adds a middleware to the broker that stop() leaves behind; a
        # queue declared later would start a consumer for this dead worker.
        self.broker.middleware = [
            m for m in self.broker.middleware if getattr(m, "worker", None) is not worker
        ]


def run_worker_process(settings: Settings, *, worker_threads: int = 8) -> None:
    """``kartoteka worker``: process jobs until SIGTERM or SIGINT, then stop cleanly."""
    from core.db import bind_tables
    from core.jobs.broker import setup_broker

    if settings.embedded:
        raise SystemExit(
            "BROKER_URL is empty: jobs run inside the web process (embedded mode). "
            "Set BROKER_URL to a redis:// or amqp:// URL to run separate workers."
        )
    broker = setup_broker(settings)  # before any actor module is imported
    runtime = build_runtime(settings)
    set_runtime(runtime)
    load_actors(runtime)
    bind_tables()
    events.set_dispatcher(lambda event: runtime.plugins.pm.hook.domain_event(event=event))

    stopping = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        log.info("worker: signal %s, stopping", signum)
        stopping.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    worker = EmbeddedWorker(broker, worker_threads=worker_threads)
    worker.start()
    log.info("worker started on %s: %s", type(broker).__name__, sorted(broker.actors))
    try:
        while not stopping.wait(1.0):
            pass
    finally:
        worker.stop()
        broker.close()
        events.set_dispatcher(None)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
