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


async def _deal_totals_mismatch(database_url: str) -> tuple[int, int]:
    """(total rows, live deals) that disagree between core_deal_total and the deals."""
    from bench.dataset import Db

    live = (
        "SELECT d.stage, d.responsible, d.currency, COUNT(*), SUM(d.amount_minor) "
        "FROM core_deal d JOIN core_client c ON c.id = d.client "
        "WHERE d.deleted_at IS NULL AND c.deleted_at IS NULL "
        "GROUP BY d.stage, d.responsible, d.currency"
    )
    kept = (
        "SELECT stage, responsible, currency, deals, amount_minor FROM core_deal_total "
        "WHERE deals <> 0"
    )
    async with Db(database_url) as bench_db:
        if not await bench_db.value(f"SELECT count(*) FROM ({live}) AS deals"):
            return (-1, -1)  # no deals at all: nothing was loaded
        only_kept = await bench_db.value(f"SELECT count(*) FROM ({kept} EXCEPT {live}) AS x")
        only_live = await bench_db.value(f"SELECT count(*) FROM ({live} EXCEPT {kept}) AS x")
    return (only_kept, only_live)


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
        totals = await _deal_totals_mismatch(runtime.settings.database_url)
    finally:
        await truncate_all()  # the bench's users and clients are not the next test's
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads(report_path.read_text())

    assert report["clients"] == 2000
    # The bulk-loaded deals are on the board's totals, as if the deals service wrote them.
    assert totals == (0, 0)
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


FULL_SCENARIOS = {
    "list, sort name",
    "list, sort activity",
    "list page, sort name",
    "list page, sort activity",
    "list last page",
    "name prefix",
    "name fragment",
    "phone, +7 spaced",
    "phone, 8 (xxx)",
    "phone, digits",
    "phone of a contact person",
    "e-mail",
    "INN",
    "client card (500 entries)",
    "card: older timeline entries",
    "pipeline board",
    "my tasks, today",
    "my tasks, overdue",
    "dashboard page",
    "dashboard: tasks panel",
    "dashboard: deals panel",
    "dashboard: clients panel",
    "create client",
    "move deal (board)",
    "complete task",
}
FOUND = {
    "name prefix",
    "name fragment",
    "phone, +7 spaced",
    "phone, 8 (xxx)",
    "phone, digits",
    "e-mail",
    "INN",
}


def _full_scenario(name: str) -> str:
    """Drop what depends on the data: 'list last page 20, sort name' -> 'list last page'."""
    if name.startswith("list page "):
        return "list page, sort " + name.split("sort ")[1]
    for stem in ("list last page", "name prefix", "name fragment"):
        if name.startswith(stem):
            return stem
    return name


async def test_full_benchmark_runs_every_scenario_and_undoes_its_writes(
    db: None, runtime: Any, tmp_path: Path
) -> None:
    """`make bench` on 1,000 clients: every page, search and write of issue 7 as a manager
    and as the admin, the throughput run, and the dataset left as it was loaded."""
    from bench.dataset import Db
    from bench.records import shape

    report_path = tmp_path / "full.json"
    url = runtime.settings.database_url
    command = [
        sys.executable,
        "-m",
        "bench.full",
        "--clients=1000",
        "--requests=3",
        "--warmup=1",
        "--throughput-seconds=1",
        "--throughput-runs=2",
        "--connections=2",
        f"--database-url={url}",
        f"--json={report_path}",
        "--explain",
    ]
    if os.environ.get("BROKER_URL"):
        command.append(f"--broker-url={os.environ['BROKER_URL']}")
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
        report = json.loads(report_path.read_text()) if done.returncode == 0 else {}
        async with Db(url) as bench_db:
            counts = await bench_db.fetch(
                "SELECT (SELECT count(*) FROM core_client), (SELECT count(*) FROM core_timeline)"
            )
            for undone in report.get("writes_undone", []):
                marks = ", ".join(str(int(task)) for task in undone["tasks"])
                still_done = await bench_db.value(
                    f"SELECT count(*) FROM core_task WHERE id IN ({marks}) AND done_at IS NOT NULL"
                )
                stage = await bench_db.value(
                    "SELECT stage FROM core_deal WHERE id = $1", undone["deal"]
                )
                undone.update(still_done=still_done, stage_now=stage)
    finally:
        await truncate_all()
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert report["clients"] == 1000
    for role in ("manager", "admin"):
        rows = {_full_scenario(r["scenario"]): r for r in report["results"] if r["role"] == role}
        assert set(rows) == FULL_SCENARIOS, (role, FULL_SCENARIOS ^ set(rows))
        assert all(rows[name]["note"] == "found" for name in FOUND), role
        assert rows["create client"]["note"] == "created"
    assert all(r["requests"] == 3 and r["p95"] > 0 for r in report["results"])
    assert all(r["client_p95"] >= r["p50"] for r in report["results"]), "server time is less"
    assert len(report["throughput"]) == 2 and isinstance(report["throughput_met"], bool)
    for rate in report["throughput"]:
        assert rate["requests"] > 0 and rate["errors"] == 0 and rate["server_cpu_ms"] > 0
    assert report["rss_mb"] and all(size > 0 for size in report["rss_mb"])
    # --explain sees the raw statements (core.db.fetch) as well as Piccolo's queries.
    explained = {p["query"].split(" [")[0] for p in report["plans"] if p["role"] == "manager"}
    card = ("client", "timeline", "contacts", "deals", "open tasks", "files")
    assert {f"card: {part}" for part in card} | {"board"} <= explained, explained
    # The writes were taken back: no extra clients or timeline entries, the completed
    # tasks open again, the moved deals on their stage.
    assert counts[0] == (1000, shape(1000, 50).timeline)
    assert len(report["writes_undone"]) == 2
    for undone in report["writes_undone"]:
        assert len(undone["tasks"]) == 4 and undone["still_done"] == 0
        assert undone["stage_now"] == undone["stages"][0]
