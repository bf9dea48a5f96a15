"""Maintenance mode keeps everyone out while the database is being replaced."""

from __future__ import annotations

from typing import Any

from core import maintenance


async def test_pages_and_api_answer_503_with_the_reason(as_manager: Any) -> None:
    maintenance.enter("restore", "Restoring the backup of 21 November")
    try:
        page = await as_manager.get("/clients")
        assert page.status_code == 503
        assert "Restoring the backup of 21 November" in page.text
        assert page.headers["retry-after"] == "60"
        api = await as_manager.get("/api/v1/clients")
        assert api.status_code == 503 and api.json()["detail"].startswith("Restoring")
        assert (await as_manager.get("/static/kartoteka.css")).status_code == 200
    finally:
        maintenance.leave()
    assert (await as_manager.get("/clients")).status_code == 200


def test_a_failed_block_stays_in_maintenance(runtime: Any) -> None:
    try:
        with maintenance.during("upgrade", "Upgrading to 0.2"):
            raise RuntimeError("migration 7 failed")
    except RuntimeError:
        pass
    assert maintenance.current()["reason"] == "Upgrading to 0.2"
    maintenance.leave()
    assert maintenance.current() is None
