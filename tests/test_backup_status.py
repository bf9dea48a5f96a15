"""The backup status the admin page, the banner and /readyz read."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from core.backup.status import backup_status
from core.services.common import utcnow
from core.tables import BackupRun


async def _run(kind: str, status: str, hours_ago: float, message: str = "") -> None:
    finished = utcnow() - timedelta(hours=hours_ago)
    await BackupRun.insert(
        BackupRun(
            kind=kind,
            status=status,
            started_at=finished - timedelta(minutes=1),
            finished_at=finished,
            message=message,
        )
    )


async def test_status_names_what_is_missing(db: None, runtime: Any, monkeypatch: Any) -> None:
    assert not (await backup_status()).configured
    settings = dataclasses.replace(runtime.settings, backup_repository="/srv/backups")
    monkeypatch.setattr(runtime, "settings", settings)
    status = await backup_status()
    assert status.configured and len(status.problems) == 2
    await _run("backup", "ok", hours_ago=2)
    await _run("verify", "ok", hours_ago=1.9)
    assert (await backup_status()).ok
    await _run("backup", "ok", hours_ago=30)  # an older run does not matter
    assert (await backup_status()).ok
    await _run("check", "failed", hours_ago=0.1, message="wrong password")
    status = await backup_status()
    assert status.problems == ["The last repository check failed: wrong password"]
    stale = await backup_status(now=utcnow() + timedelta(hours=30))
    assert any("No good backup in the last 26 hours" in p for p in stale.problems)
