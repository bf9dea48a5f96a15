"""The install's one scheduler: at each cron tick it sends a message to an actor.

Exactly one scheduler may run per install, or every job would fire once per copy: in
embedded mode it is a thread of the web process, in server mode the
``kartoteka scheduler`` process. The same process runs the ``background_services``
(``core.jobs.services``). The schedule lives in code (the ``scheduled_jobs``
hook), so APScheduler's in-memory job store is rebuilt at every start and nothing can
go stale. The work itself runs on a job worker, never in the scheduler.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger

from core.hooktypes import ScheduledJob
from core.runtime import Runtime, build_runtime, set_runtime
from core.settings import Settings

log = logging.getLogger(__name__)


class ScheduleError(ValueError):
    """A scheduled job cannot be scheduled; the message names the job."""


def make_trigger(job: ScheduledJob, timezone: str) -> CronTrigger:
    try:
        return CronTrigger.from_crontab(job.cron, timezone=timezone)
    except ValueError as exc:
        raise ScheduleError(
            f"scheduled job {job.name!r}: invalid cron {job.cron!r}: {exc}"
        ) from exc


def build_schedule(runtime: Runtime) -> list[ScheduledJob]:
    """The jobs of the core and the enabled plugins, checked before anything starts."""
    jobs = runtime.plugins.collect("scheduled_jobs")
    seen: set[str] = set()
    for job in jobs:
        if not isinstance(job, ScheduledJob):
            raise ScheduleError(f"scheduled_jobs returned {job!r}, not a ScheduledJob")
        if job.name in seen:
            raise ScheduleError(f"two scheduled jobs are named {job.name!r}")
        if not callable(getattr(job.actor, "send", None)):
            raise ScheduleError(f"scheduled job {job.name!r}: {job.actor!r} is not an actor")
        seen.add(job.name)
        make_trigger(job, runtime.settings.timezone)
    return jobs


def add_jobs(scheduler: BaseScheduler, jobs: list[ScheduledJob], timezone: str) -> None:
    for job in jobs:
        scheduler.add_job(
            job.actor.send,
            trigger=make_trigger(job, timezone),
            kwargs=dict(job.kwargs),
            id=job.name,
            name=job.name,
            # After a pause (laptop asleep, process stopped) run once, not once per
            # missed tick, and only if the tick is less than a minute old.
            coalesce=True,
            max_instances=1,
            misfire_grace_time=60,
            replace_existing=True,
        )


class EmbeddedScheduler:
    """The scheduler as a background thread of the web process (embedded mode)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.scheduler = BackgroundScheduler(timezone=runtime.settings.timezone, daemon=True)

    def start(self) -> None:
        add_jobs(self.scheduler, build_schedule(self.runtime), self.runtime.settings.timezone)
        self.scheduler.start()
        log.info("scheduler started: %s", ", ".join(j.id for j in self.scheduler.get_jobs()))

    def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)


def run_scheduler_process(settings: Settings) -> None:
    """``kartoteka scheduler``: run the schedule until SIGTERM or SIGINT."""
    from core.jobs.broker import setup_broker

    if settings.embedded:
        raise SystemExit(
            "BROKER_URL is empty: the scheduler runs inside the web process (embedded "
            "mode). Set BROKER_URL to a redis:// or amqp:// URL to run it separately."
        )
    setup_broker(settings)  # before build_schedule imports the actor modules
    runtime = build_runtime(settings)
    set_runtime(runtime)
    jobs = build_schedule(runtime)
    scheduler = BlockingScheduler(timezone=settings.timezone)
    add_jobs(scheduler, jobs, settings.timezone)

    def shutdown(signum: int, frame: Any) -> None:
        log.info("scheduler: signal %s, stopping", signum)
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    log.info("scheduler started: %s", ", ".join(job.name for job in jobs))
    # The one scheduler of the install also owns the long-lived connections.
    from core.db import bind_tables
    from core.jobs.services import BackgroundServicesThread

    bind_tables()
    services = BackgroundServicesThread(runtime)
    services.start()
    try:
        scheduler.start()
    finally:
        services.stop()
