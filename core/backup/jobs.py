"""The backup jobs: scheduled (``scheduled_jobs`` hook) or queued from the admin page.

No retries: a failed run is recorded and alerted, and the next scheduled one tries
again; retrying at once would mostly meet the same full disk or wrong password.
"""

from __future__ import annotations

import logging

from core import i18n, maintenance
from core.backup.engine import BackupFailed, fail_queued, run_backup, run_check, verify_latest
from core.i18n import _
from core.jobs import actor
from core.runtime import get_runtime

log = logging.getLogger(__name__)

TIME_LIMIT_MS = 12 * 60 * 60 * 1000
"""A backup of a big install over a slow link takes hours; Dramatiq's default is minutes."""


async def _may_run(run_id: int | None) -> bool:
    settings = get_runtime().settings
    i18n.current_locale.set(settings.default_locale)
    if not settings.backup_repository:
        await fail_queued(run_id, _("Backups are not configured: set backup_repository."))
        return False
    state = maintenance.current()
    if state is not None:
        await fail_queued(
            run_id, _("Skipped: Kartoteka was in maintenance (%(reason)s).", reason=state["reason"])
        )
        return False
    return True


async def back_up_and_verify(trigger: str = "scheduled", run_id: int | None = None) -> None:
    """Back up, apply retention, then prove the new backup restores."""
    if not await _may_run(run_id):
        return
    try:
        await run_backup(trigger, run_id)
        await verify_latest()
    except BackupFailed as exc:  # recorded and alerted already
        log.warning("backup job: %s", exc.message)


async def verify(run_id: int | None = None) -> None:
    if not await _may_run(run_id):
        return
    try:
        await verify_latest(run_id)
    except BackupFailed as exc:
        log.warning("verify job: %s", exc.message)


async def check() -> None:
    if not await _may_run(None):
        return
    try:
        await run_check()
    except BackupFailed as exc:
        log.warning("repository check job: %s", exc.message)


@actor(max_retries=0, time_limit=TIME_LIMIT_MS)
async def backup_job(trigger: str = "scheduled", run_id: int | None = None) -> None:
    await back_up_and_verify(trigger, run_id)


@actor(max_retries=0, time_limit=TIME_LIMIT_MS)
async def verify_job(run_id: int | None = None) -> None:
    await verify(run_id)


@actor(max_retries=0, time_limit=TIME_LIMIT_MS)
async def check_job() -> None:
    await check()
