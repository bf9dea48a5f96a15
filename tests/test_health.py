"""/healthz and /readyz over HTTP: what each reports, when readiness fails, no secrets."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from core import __version__, maintenance
from core.services.common import utcnow
from core.tables import BackupRun


@pytest.fixture
def settings_with(runtime: Any, monkeypatch: Any) -> Iterator[Any]:
    """Swap settings for one test; the app reads them from the runtime on every request."""

    def apply(**changes: Any) -> None:
        monkeypatch.setattr(runtime, "settings", dataclasses.replace(runtime.settings, **changes))

    yield apply


async def _backup_run(kind: str, status: str, hours_ago: float, message: str = "") -> None:
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


async def test_healthz_answers_without_a_database(client: Any, settings_with: Any) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": __version__}
    assert response.headers["cache-control"] == "no-store"
    settings_with(database_url="postgresql://kartoteka:db-secret-pw@127.0.0.1:1/kartoteka")
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).status_code == 503


async def test_readyz_ready(client: Any, runtime: Any) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready" and body["version"] == __version__
    checks = body["checks"]
    assert checks["database"] == {"ok": True}
    expected_kind = runtime.settings.broker_url.split(":", 1)[0] or "embedded"
    assert checks["broker"] == {"kind": expected_kind, "ok": True}
    assert checks["maintenance"] == {"ok": True}
    assert checks["backup"] == {"configured": False, "ok": True}
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://kartoteka:db-secret-pw@127.0.0.1:1/kartoteka",
        "sqlite:////nonexistent/db-secret-pw/kartoteka.sqlite3",
    ],
)
async def test_readyz_unavailable_without_database(
    client: Any, settings_with: Any, url: str
) -> None:
    settings_with(database_url=url)
    response = await client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"]["ok"] is False
    assert "backup" not in body["checks"]  # read from the database, so not known
    assert "db-secret-pw" not in response.text and "127.0.0.1" not in response.text


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("redis://:broker-secret-pw@127.0.0.1:1/0", "redis"),
        ("amqp://guest:broker-secret-pw@127.0.0.1:1/%2F", "amqp"),
    ],
)
async def test_readyz_unavailable_without_broker(
    client: Any, settings_with: Any, url: str, kind: str
) -> None:
    settings_with(broker_url=url)
    response = await client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["broker"]["kind"] == kind
    assert body["checks"]["broker"]["ok"] is False
    assert body["checks"]["database"] == {"ok": True}
    assert "broker-secret-pw" not in response.text


async def test_readyz_embedded_queue_must_take_writes(
    client: Any, settings_with: Any, tmp_path: Path
) -> None:
    settings_with(broker_url="", data_dir=tmp_path)
    assert (await client.get("/readyz")).status_code == 200  # no queue file yet: the dir
    (tmp_path / "jobs.sqlite3").mkdir()  # something that cannot be opened as the queue
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"] == {
        "kind": "embedded",
        "ok": False,
        "error": "OperationalError",
    }
    settings_with(data_dir=tmp_path / "missing")
    assert (await client.get("/readyz")).status_code == 503


async def test_readyz_unavailable_during_maintenance(client: Any) -> None:
    maintenance.enter("restore", "Restoring the backup of 2024-05-01")
    try:
        response = await client.get("/readyz")
        health = await client.get("/healthz")
    finally:
        maintenance.leave()
    assert response.status_code == 503
    assert response.json()["checks"]["maintenance"] == {
        "ok": False,
        "kind": "restore",
        "reason": "Restoring the backup of 2024-05-01",
    }
    assert health.status_code == 200
    assert (await client.get("/readyz")).status_code == 200


async def test_backup_problems_degrade_but_stay_ready(client: Any, settings_with: Any) -> None:
    settings_with(backup_repository="sftp:backup@vault.example:/srv/restic")
    response = await client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    backup = body["checks"]["backup"]
    assert backup["configured"] is True and backup["ok"] is False
    assert backup["problems"] == 2 and backup["last_backup_at"] is None

    await _backup_run("backup", "ok", hours_ago=3)
    await _backup_run("verify", "ok", hours_ago=2.5)
    body = (await client.get("/readyz")).json()
    assert body["status"] == "ready"
    assert body["checks"]["backup"]["last_backup_age_hours"] == 3.0
    assert body["checks"]["backup"]["last_verify_age_hours"] == 2.5

    leaky = "Fatal: unable to open repo at rest:https://user:restic-secret-pw@vault.example/"
    await _backup_run("backup", "failed", hours_ago=0.5, message=leaky)
    response = await client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["backup"]["last_failure"]["kind"] == "backup"
    assert "restic-secret-pw" not in response.text and "vault.example" not in response.text


async def test_health_endpoints_need_no_login_and_pass_maintenance(client: Any) -> None:
    """Both are public and stay reachable while every other page answers 503."""
    maintenance.enter("upgrade", "Upgrading")
    try:
        assert (await client.get("/clients")).status_code == 503
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).json()["status"] == "unavailable"
    finally:
        maintenance.leave()
