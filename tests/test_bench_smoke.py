"""The scoped-list benchmark end to end on a tiny dataset, so it cannot rot.

It loads 2,000 clients into the test database, starts `kartoteka run` against it,
logs in as a manager, a team head and the admin, checks that each sees exactly
their scope, times every scenario a few times and EXPLAINs the list queries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import truncate_all

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = {
    "list, sort name",
    "list, sort activity",
    "name prefix",
    "phone, other format",
    "e-mail",
    "INN",
    "client card",
}


def _scenario(name: str) -> str:
    """'name prefix, typing 'вектор'' -> 'name prefix' (the word depends on the data)."""
    return name.split(", typing")[0]


async def test_benchmark_runs_against_the_test_database(
    db: None, runtime: Any, tmp_path: Path
) -> None:
    report_path = tmp_path / "bench.json"
    command = [
        sys.executable,
        "-m",
        "bench.scoped_lists",
        "--clients=2000",
        "--requests=3",
        "--warmup=1",
        f"--database-url={runtime.settings.database_url}",
        f"--json={report_path}",
    ]
    if os.environ.get("BROKER_URL"):
        command.append(f"--broker-url={os.environ['BROKER_URL']}")
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    finally:
        await truncate_all()  # the bench's users and clients are not the next test's
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads(report_path.read_text())

    assert report["clients"] == 2000
    assert report["scope_checks"] == [
        "manager: other team's client hidden (card 404, no hit)",
        "head: other team's client hidden (card 404, no hit)",
        "admin: other team's client visible",
    ]
    for role in ("manager", "head", "admin"):
        timed = {_scenario(r["scenario"]) for r in report["results"] if r["role"] == role}
        assert timed >= SCENARIOS, (role, SCENARIOS - timed)
        assert any(name.startswith("last page") for name in timed), role
    assert all(r["requests"] == 3 and r["p95"] > 0 for r in report["results"])
    assert report["rss_mb"] and all(size > 0 for size in report["rss_mb"])

    def page_query(role: str, label: str) -> str:
        """The plan of the first query a list request sends (the page itself)."""
        return next(
            p["steps"]
            for p in report["plans"]
            if p["role"] == role and p["query"].startswith(f"{label} [1/")
        )

    # A manager's own clients are read through an index led by `responsible` (which one
    # the planner picks for a table this small varies), never by scanning the table.
    for sort in ("name", "activity"):
        assert "core_client_resp_" in page_query("manager", f"list, sort {sort}")
