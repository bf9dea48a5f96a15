"""The dashboard: the user's tasks, open deals by stage, recent clients, widgets."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from core.services import clients, dashboard, deal_totals, tasks
from core.services.common import utcnow
from core.tables import Deal, Pipeline, Stage


async def _deals(manager: dict[str, Any], client_id: int) -> None:
    now = utcnow()
    pipeline = (await Pipeline.insert(Pipeline(name="Sales")).returning(Pipeline.id))[0]["id"]
    stages = {}
    for position, (name, outcome) in enumerate(
        [("Lead", "open"), ("Proposal", "open"), ("Won", "won")]
    ):
        rows = await Stage.insert(
            Stage(pipeline=pipeline, name=name, position=position, outcome=outcome)
        ).returning(Stage.id)
        stages[name] = rows[0]["id"]
    for stage, amount, deleted in [
        ("Lead", 100_00, None),
        ("Lead", 250_50, None),
        ("Proposal", 1_000_00, None),
        ("Proposal", 5_00, now),  # deleted: not counted
        ("Won", 9_999_00, None),  # closed: not counted
    ]:
        await Deal.insert(
            Deal(
                title=f"{stage} deal",
                client=client_id,
                pipeline=pipeline,
                stage=stages[stage],
                amount_minor=amount,
                responsible=manager["id"],
                created_at=now,
                updated_at=now,
                deleted_at=deleted,
            )
        )
    await deal_totals.rebuild()  # rows written behind the deals service's back


async def _setup(manager: dict[str, Any]) -> int:
    client_id = await clients.create_client(
        {"kind": "company", "name": "Romashka", "responsible": manager["id"]}, manager["id"]
    )
    await _deals(manager, client_id)
    for title, delta in [("Old call", -timedelta(days=3)), ("Next week", timedelta(days=7))]:
        due = (utcnow() + delta).strftime("%Y-%m-%dT%H:%M+00:00")
        await tasks.create_task({"title": title, "due_at": due, "client": client_id}, manager["id"])
    return client_id


async def test_dashboard_service(manager):
    client_id = await _setup(manager)
    rows = await dashboard.open_deals_by_stage(manager["id"])
    assert [(r["stage_name"], r["deals"], r["amount_minor"]) for r in rows] == [
        ("Lead", 2, 350_50),
        ("Proposal", 1, 1_000_00),
    ]
    summary = await dashboard.task_summary(manager["id"])
    assert summary["overdue_count"] == 1 and summary["overdue"][0]["title"] == "Old call"
    assert summary["today_count"] == 0
    recent = await dashboard.recent_clients(manager["id"])
    assert [c["id"] for c in recent] == [client_id]
    everything = await dashboard.for_user(manager)
    assert [w.key for w in everything["widgets"]] == ["sample"]


async def test_dashboard_pages(as_manager, manager):
    await _setup(manager)
    page = await as_manager.get("/")
    assert page.status_code == 200
    for url in ("/dashboard/tasks", "/dashboard/deals", "/dashboard/clients", "/p/sample/hello"):
        assert f'hx-get="{url}"' in page.text
    panel = await as_manager.get("/dashboard/tasks")
    assert panel.status_code == 200 and "Old call" in panel.text and "Next week" not in panel.text
    deals = await as_manager.get("/dashboard/deals")
    assert "Proposal" in deals.text and "Lead" in deals.text and "Won" not in deals.text
    recent = await as_manager.get("/dashboard/clients")
    assert "Romashka" in recent.text

    task_id = summary_id = (await tasks.my_tasks(manager["id"], "overdue"))[0]["id"]
    r = await as_manager.post(
        f"/tasks/{task_id}/complete?panel=dashboard",
        headers={"x-csrftoken": as_manager.cookies.get("csrftoken", ""), "hx-request": "true"},
    )
    assert r.status_code == 200 and "Old call" not in r.text
    assert (await tasks.get_task(summary_id))["done_at"] is not None


async def test_dashboard_empty(as_admin):
    page = await as_admin.get("/dashboard/deals")
    assert "No open deals" in page.text
