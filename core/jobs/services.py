"""Supervising the ``background_services`` of the core and the plugins.

They run where the schedule runs (one process per install, see
``core.jobs.scheduler``): embedded mode starts them on the web server's event loop,
``kartoteka scheduler`` on a loop in a thread of its own. A service that returns or
raises is started again after a pause, so one broken plugin neither stops the others
nor spins the CPU.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from core.db import get_engine, start_pool
from core.hooktypes import BackgroundService
from core.runtime import Runtime

log = logging.getLogger(__name__)

FIRST_PAUSE = 5.0
LONGEST_PAUSE = 300.0


def collect_services(runtime: Runtime) -> list[BackgroundService]:
    services = runtime.plugins.collect("background_services")
    names: set[str] = set()
    for service in services:
        if not isinstance(service, BackgroundService):
            raise TypeError(f"background_services returned {service!r}, not a BackgroundService")
        if service.name in names:
            raise ValueError(f"two background services are named {service.name!r}")
        names.add(service.name)
    return services


async def supervise(
    service: BackgroundService,
    first_pause: float = FIRST_PAUSE,
    longest_pause: float = LONGEST_PAUSE,
) -> None:
    """Run ``service`` until cancelled, restarting it with a growing pause."""
    pause = first_pause
    while True:
        try:
            await service.run()
            log.warning("background service %s returned; starting it again", service.name)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background service %s failed; starting it again", service.name)
        await asyncio.sleep(pause)
        pause = min(pause * 2, longest_pause)


class BackgroundServices:
    """The running services of this process: `start` on an event loop, `stop` to cancel."""

    def __init__(self, runtime: Runtime) -> None:
        self.services = collect_services(runtime)
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start every service as a task of the running loop."""
        for service in self.services:
            self.tasks.append(asyncio.create_task(supervise(service), name=service.name))
        if self.services:
            log.info("background services: %s", ", ".join(s.name for s in self.services))

    async def stop(self) -> None:
        tasks, self.tasks = self.tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class BackgroundServicesThread:
    """The services on an event loop of their own (the scheduler process is synchronous)."""

    def __init__(self, runtime: Runtime) -> None:
        self.services = BackgroundServices(
            runtime
        )  # a bad declaration fails here, not in the thread
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            # The only loop of this process using the database: pooled PostgreSQL
            # connections, as in the web processes (a new connection per query costs
            # more than most queries, and a call's screen pop takes a dozen).
            pooled = self.loop.run_until_complete(start_pool())
            self.loop.call_soon(self.services.start)
            self.loop.call_soon(ready.set)
            self.loop.run_forever()
            if pooled:
                self.loop.run_until_complete(get_engine().close_connection_pool())  # type: ignore[attr-defined]
            self.loop.close()

        self.thread = threading.Thread(target=run, name="background-services", daemon=True)
        self.thread.start()
        ready.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        loop = self.loop
        if loop is None or self.thread is None:
            return
        future = asyncio.run_coroutine_threadsafe(self.services.stop(), loop)
        try:
            future.result(timeout=timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            self.thread.join(timeout=timeout)
