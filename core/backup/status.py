"""Is the install safe? What the admin page, the banner and /readyz ask.

Read from ``core_backup_run`` only (never from restic), so asking is cheap enough
for every page and every health probe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from core.runtime import get_runtime
from core.services.common import as_utc, utcnow
from core.tables import BackupRun


@dataclass(frozen=True)
class BackupStatus:
    configured: bool
    last_backup: dict[str, Any] | None
    """The latest successful backup run (a ``core_backup_run`` row), if any."""
    last_verify: dict[str, Any] | None
    """The latest successful verification (a test restore)."""
    last_failure: dict[str, Any] | None
    """The latest run of any kind, when it failed."""
    problems: list[str] = field(default_factory=list)
    """Plain-language reasons to act; empty when all is well."""

    @property
    def ok(self) -> bool:
        return not self.problems


async def _latest(kind: str | None = None, status: str | None = None) -> dict[str, Any] | None:
    query = BackupRun.select()
    if kind:
        query = query.where(BackupRun.kind == kind)
    if status:
        query = query.where(BackupRun.status == status)
    row = await query.order_by(BackupRun.started_at, BackupRun.id, ascending=False).first()
    if row:
        for key in ("started_at", "finished_at"):
            row[key] = as_utc(row[key])
    return row


def _older_than(row: dict[str, Any] | None, limit: timedelta, now: datetime) -> bool:
    return row is None or row["finished_at"] is None or now - row["finished_at"] > limit


async def backup_status(now: datetime | None = None) -> BackupStatus:
    from core.i18n import _

    settings = get_runtime().settings
    now = now or utcnow()
    if not settings.backup_repository:
        return BackupStatus(
            configured=False,
            last_backup=None,
            last_verify=None,
            last_failure=None,
            problems=[_("Backups are not configured: set backup_repository.")],
        )
    last_backup = await _latest("backup", "ok")
    last_verify = await _latest("verify", "ok")
    latest = await _latest()
    last_failure = latest if latest and latest["status"] == "failed" else None
    limit = timedelta(hours=settings.backup_max_age_hours)
    problems = []
    if _older_than(last_backup, limit, now):
        problems.append(
            _("No good backup in the last %(hours)s hours.", hours=settings.backup_max_age_hours)
        )
    if _older_than(last_verify, limit, now):
        problems.append(
            _(
                "No backup was proven to restore in the last %(hours)s hours.",
                hours=settings.backup_max_age_hours,
            )
        )
    if last_failure:
        problems.append(_("The last %(kind)s failed: %(error)s", **_failure_words(last_failure)))
    return BackupStatus(True, last_backup, last_verify, last_failure, problems)


def _failure_words(run: dict[str, Any]) -> dict[str, str]:
    from core.i18n import _

    kinds = {
        "backup": _("backup"),
        "verify": _("verification"),
        "check": _("repository check"),
        "restore": _("restore"),
    }
    return {"kind": kinds.get(run["kind"], run["kind"]), "error": run["message"]}
