"""The backups admin page: is the install safe, what is in the repository, back up now.

The page itself reads only ``core_backup_run`` rows (cheap); the snapshot list asks
restic and is loaded by htmx after the page, so a slow or broken repository shows as
a message in its place instead of holding the page up. The banner every page of an
administrator loads works the same way (see ``core/_backup_banner.html``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Request, Response, get, post
from litestar.response import Template

from core.access import needs
from core.backup import engine
from core.backup.restic import ResticError, redact
from core.backup.status import backup_status
from core.default_hooks import BACKUPS
from core.i18n import _
from core.runtime import get_runtime
from core.services import audit
from core.services.common import write
from core.tables import BackupRun
from core.web.controllers.base import is_htmx, redirect, render


def _labels() -> dict[str, dict[str, str]]:
    return {
        "kinds": {
            "backup": _("Backup"),
            "verify": _("Test restore"),
            "check": _("Repository check"),
            "restore": _("Restore"),
        },
        "steps": {
            "queued": _("waiting for the job worker"),
            "starting": _("starting"),
            "repository": _("opening the repository"),
            "database": _("copying the database"),
            "files": _("saving the files"),
            "retention": _("removing old backups"),
            "stats": _("measuring the repository"),
            "reading": _("reading the latest backup"),
            "restoring": _("restoring into a scratch database"),
            "checking": _("checking the repository"),
        },
        "statuses": {"running": _("running"), "ok": _("OK"), "failed": _("failed")},
    }


async def _runs_context() -> dict[str, Any]:
    running = await engine.running_runs()
    return {"running": running, "runs": await engine.recent_runs(20), **_labels()}


async def _page(request: Request, notice: str = "", status_code: int = 200) -> Template:
    settings = get_runtime().settings
    status = await backup_status()
    for row in (status.last_backup, status.last_verify, status.last_failure):
        if row is not None:
            engine.loaded_run(row)
    return render(
        request,
        "core/admin/backups.html",
        status_code=status_code,
        status=status,
        repository=await engine.repository_info(),
        location=redact(settings.backup_repository),
        settings=settings,
        notice=notice,
        **await _runs_context(),
    )


@get("/admin/backups", opt=needs(BACKUPS))
async def backups_page(request: Request) -> Template:
    return await _page(request)


@get("/admin/backups/runs", opt=needs(BACKUPS), cache=False)
async def backups_runs(request: Request) -> Response[Any]:
    """Polled every 2 s while a run is in progress; reloads the page when it is over."""
    context = await _runs_context()
    if is_htmx(request) and not context["running"]:
        return Response("", media_type="text/html", headers={"HX-Refresh": "true"})
    return render(request, "core/admin/backups_runs.html", **context)


@get("/admin/backups/snapshots", opt=needs(BACKUPS), cache=False)
async def backups_snapshots(request: Request) -> Template:
    error = ""
    backups: list[dict[str, Any]] = []
    try:
        backups = await asyncio.to_thread(engine.list_backups)
    except (ResticError, engine.BackupFailed) as exc:
        error = exc.message
    verified = {
        row["snapshot_id"]
        for row in await BackupRun.select(BackupRun.snapshot_id).where(
            (BackupRun.kind == "verify") & (BackupRun.status == "ok")
        )
    }
    return render(
        request,
        "core/admin/backups_snapshots.html",
        backups=backups,
        verified=verified,
        error=error,
    )


async def _enqueue(request: Request, kind: str) -> Response[Any]:
    if not get_runtime().settings.backup_repository:
        return await _page(
            request, _("Backups are not configured: set backup_repository."), status_code=409
        )
    if await engine.running_runs():
        return await _page(
            request, _("A backup job is already running; wait for it to finish."), status_code=409
        )
    from core.backup.jobs import backup_job, verify_job

    run_id = await engine.queue_run(kind)
    try:
        if kind == "backup":
            backup_job.send(trigger="manual", run_id=run_id)
        else:
            verify_job.send(run_id=run_id)
    except Exception as exc:  # the broker is down: say so rather than wait forever
        message = _("The job could not be queued: %(error)s", error=exc)
        await engine.fail_queued(run_id, message)
        return await _page(request, message, status_code=503)
    async with write():
        await audit.record(
            f"backup.{kind}_requested",
            "backup",
            run_id,
            _("Backup requested") if kind == "backup" else _("Test restore requested"),
        )
    return redirect(request, "/admin/backups")


@post("/admin/backups/run", opt=needs(BACKUPS), status_code=200)
async def backups_run_now(request: Request) -> Response[Any]:
    return await _enqueue(request, "backup")


@post("/admin/backups/verify", opt=needs(BACKUPS), status_code=200)
async def backups_verify_now(request: Request) -> Response[Any]:
    return await _enqueue(request, "verify")


@get("/admin/backups/banner", opt=needs(BACKUPS), cache=False)
async def backups_banner(request: Request) -> Response[Any]:
    """The red bar, loaded by htmx on the pages of users who can act; empty when all is
    well, or when backups are simply not configured (a dev machine: see the page)."""
    status = await backup_status()
    if not status.configured or status.ok:
        return Response("", media_type="text/html", headers={"Cache-Control": "no-store"})
    return render(request, "core/admin/backups_banner.html", status=status)


HANDLERS: list[Any] = [
    backups_page,
    backups_runs,
    backups_snapshots,
    backups_run_now,
    backups_verify_now,
    backups_banner,
]
