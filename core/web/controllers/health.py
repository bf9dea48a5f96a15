"""Health endpoints for container runtimes, orchestrators and load balancers.

``/healthz`` (liveness) answers while the process serves requests and touches nothing
else, so a slow database never gets healthy web processes killed. ``/readyz``
(readiness) says whether this instance can serve users now: the database answers, the
broker answers (or, in embedded mode, the job queue file takes writes) and no restore
or upgrade holds the install in maintenance; any of those failing answers 503.

Backup trouble only makes ``/readyz`` "degraded" (still 200): restarting or unrouting
a web process cannot make an old backup younger, while the admin page and the red
banner ask a person to act. Both endpoints are public, so they say which check failed
and never why in detail (no URLs, hosts or restic messages); the details go to the log.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import tempfile
from collections.abc import Awaitable
from datetime import datetime
from typing import Any

from litestar import Response, get

from core import __version__, maintenance
from core.access import PUBLIC
from core.db import get_engine
from core.runtime import get_runtime
from core.services.common import utcnow
from core.settings import Settings

log = logging.getLogger(__name__)

DATABASE_TIMEOUT = 3.0
"""Seconds for ``SELECT 1``; probes come every few seconds and must not pile up."""
BROKER_TIMEOUT = 2.0
NO_STORE = {"Cache-Control": "no-store"}


def _scrub(text: str) -> str:
    """Credentials out of any URL in a message meant for the log."""
    return re.sub(r"(\w+://)[^/@\s]+@", r"\1***@", text)


async def _check(name: str, probe: Awaitable[None], timeout: float) -> dict[str, Any]:
    try:
        await asyncio.wait_for(probe, timeout)
    except TimeoutError:
        log.warning("readyz: %s did not answer within %ss", name, timeout)
        return {"ok": False, "error": "timeout"}
    except Exception as exc:
        log.warning("readyz: %s failed: %s", name, _scrub(f"{type(exc).__name__}: {exc}"))
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True}


async def _select_one() -> None:
    await get_engine().run_ddl("SELECT 1")


async def _redis_ping(url: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(
        url, socket_connect_timeout=BROKER_TIMEOUT, socket_timeout=BROKER_TIMEOUT
    )
    try:
        await client.ping()
    finally:
        await client.aclose()


def _amqp_connect(url: str) -> None:
    import pika

    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = BROKER_TIMEOUT
    params.stack_timeout = BROKER_TIMEOUT
    pika.BlockingConnection(params).close()


def _queue_writable(settings: Settings) -> None:
    """The embedded queue takes a write lock (or, before its first job, the data dir
    takes a file): root in a container passes any permission test, a real write does not."""
    from core.jobs.broker import JOBS_DB

    path = settings.data_dir / JOBS_DB
    if not path.exists():
        with tempfile.TemporaryFile(dir=settings.data_dir):
            return
    conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=BROKER_TIMEOUT)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    finally:
        conn.close()


async def _broker(settings: Settings) -> dict[str, Any]:
    url = settings.broker_url
    if not url:
        result = await _check(
            "job queue", asyncio.to_thread(_queue_writable, settings), BROKER_TIMEOUT + 1
        )
        return {"kind": "embedded", **result}
    if url.startswith(("redis://", "rediss://")):
        return {"kind": "redis", **await _check("broker", _redis_ping(url), BROKER_TIMEOUT + 1)}
    probe = asyncio.to_thread(_amqp_connect, url)
    return {"kind": "amqp", **await _check("broker", probe, BROKER_TIMEOUT + 1)}


def _age_hours(run: dict[str, Any] | None, now: datetime) -> float | None:
    if run is None or run.get("finished_at") is None:
        return None
    return round((now - run["finished_at"]).total_seconds() / 3600, 1)


def _when(run: dict[str, Any] | None) -> str | None:
    return run["finished_at"].isoformat() if run and run.get("finished_at") else None


async def _backup() -> dict[str, Any]:
    """Ages and a problem count; the plain-language reasons stay on the admin page."""
    from core.backup.status import backup_status

    status = await backup_status()
    if not status.configured:
        return {"configured": False, "ok": True}
    now = utcnow()
    failure = status.last_failure
    return {
        "configured": True,
        "ok": status.ok,
        "problems": len(status.problems),
        "max_age_hours": get_runtime().settings.backup_max_age_hours,
        "last_backup_at": _when(status.last_backup),
        "last_backup_age_hours": _age_hours(status.last_backup, now),
        "last_verify_at": _when(status.last_verify),
        "last_verify_age_hours": _age_hours(status.last_verify, now),
        "last_failure": {"kind": failure["kind"], "at": _when(failure)} if failure else None,
    }


@get("/healthz", opt=PUBLIC, include_in_schema=False, cache=False)
async def healthz() -> Response[dict[str, Any]]:
    return Response({"status": "ok", "version": __version__}, headers=NO_STORE)


@get("/readyz", opt=PUBLIC, include_in_schema=False, cache=False)
async def readyz() -> Response[dict[str, Any]]:
    settings = get_runtime().settings
    database, broker = await asyncio.gather(
        _check("database", _select_one(), DATABASE_TIMEOUT), _broker(settings)
    )
    state = maintenance.current()
    checks: dict[str, Any] = {
        "database": database,
        "broker": broker,
        "maintenance": {"ok": True}
        if state is None
        else {"ok": False, "kind": state.get("kind"), "reason": state.get("reason")},
    }
    if database["ok"]:
        try:
            checks["backup"] = await _backup()
        except Exception as exc:
            log.warning("readyz: backup status failed: %s", _scrub(repr(exc)))
            checks["backup"] = {"ok": False, "error": type(exc).__name__}
    ready = all(checks[name]["ok"] for name in ("database", "broker", "maintenance"))
    if not ready:
        status = "unavailable"
    elif not checks["backup"]["ok"]:
        status = "degraded"
    else:
        status = "ready"
    return Response(
        {"status": status, "version": __version__, "checks": checks},
        status_code=200 if ready else 503,
        headers=NO_STORE,
    )


HANDLERS = [healthz, readyz]
