"""Exports: permission, per-role limits (refused, never truncated), traceable files,
every export audited, and the anomaly alert on too many cards in an hour."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from openpyxl import load_workbook

from core import access
from core.services import audit, clients, deals, exports, notifications, tasks, users
from core.services.common import utcnow
from core.tables import AuditEntry, Notification, Role
from tests.support import login


@pytest.fixture
async def head(db: None) -> dict[str, Any]:
    return await users.create_user("head", "Hanna Head", "head-password", role="head")


@pytest.fixture
async def as_head(client: Any, head: dict[str, Any]) -> Any:
    await login(client, "head", "head-password")
    return client


async def _client(name: str, responsible: int, **extra: Any) -> int:
    return await clients.create_client({"name": name, "responsible": responsible, **extra}, None)


async def _set_limits(role: str, **limits: Any) -> None:
    await Role.update({getattr(Role, key): value for key, value in limits.items()}).where(
        Role.code == role
    )


async def _entries(action: str) -> list[dict[str, Any]]:
    rows = await AuditEntry.select().where(AuditEntry.action == action).order_by(AuditEntry.id)
    for row in rows:
        if isinstance(row["changes"], str):
            row["changes"] = json.loads(row["changes"])
    return rows


def _csv_rows(response: Any) -> tuple[str, list[list[str]]]:
    raw = response.content
    assert raw.startswith(b"\xef\xbb\xbf"), "UTF-8 with a BOM, so Excel reads Cyrillic"
    text = raw.decode("utf-8-sig")
    first, _, rest = text.partition("\r\n")
    return first, list(csv.reader(io.StringIO(rest)))


@pytest.fixture
async def low_threshold(runtime: Any) -> AsyncIterator[None]:
    original = runtime.settings
    runtime.settings = dataclasses.replace(original, anomaly_cards_per_hour=3)
    try:
        yield
    finally:
        runtime.settings = original


# --- permission ---------------------------------------------------------------------------


async def test_a_manager_may_not_export_by_default(
    as_manager: Any, manager: dict[str, Any]
) -> None:
    await _client("Acme", manager["id"])
    for url in ("/clients/export?format=csv", "/deals/export?format=xlsx", "/tasks/export"):
        response = await as_manager.get(url)
        assert response.status_code == 403, url
    response = await as_manager.get("/clients/export", headers={"accept": "application/json"})
    assert response.status_code == 403 and response.json()["detail"]
    assert await _entries("export") == []


async def test_the_audit_export_needs_both_audit_and_export(
    as_head: Any, head: dict[str, Any]
) -> None:
    assert (await as_head.get("/admin/audit/export?format=csv")).status_code == 403
    # a role with the audit permission but without export is refused too
    await Role.update({Role.permissions: ["core.audit"]}).where(Role.code == "head")
    assert (await as_head.get("/admin/audit/export?format=csv")).status_code == 403
    assert (await as_head.get("/admin/audit")).status_code == 200
    assert await _entries("export") == []


async def test_export_buttons_only_for_roles_that_may_export(
    app: Any, head: dict[str, Any], manager: dict[str, Any]
) -> None:
    template = app.template_engine.get_template("core/exports/_buttons.html")
    for user, shown in ((head, True), (manager, False)):
        html = template.render(access=await access.for_user(user), export_url="/clients/export?q=x")
        assert ('href="/clients/export?q=x&amp;format=csv"' in html) is shown
        assert ('href="/clients/export?q=x&amp;format=xlsx"' in html) is shown
    html = template.render(
        access=await access.for_user(head), export_url="/tasks/export", export_form="closest form"
    )
    assert 'href="/tasks/export?format=csv"' in html
    assert 'hx-get="/tasks/export?format=csv" hx-include="closest form"' in html


# --- files ------------------------------------------------------------------------------


async def test_csv_export_is_traceable_and_holds_what_the_user_sees(
    as_head: Any, head: dict[str, Any], manager: dict[str, Any]
) -> None:
    await _client("ООО «Ромашка»", head["id"], phones="+7 912 345-67-89", inn="7707083893")
    await _client("Ромашка-Сервис", head["id"])
    await _client("Ромашка чужая", manager["id"])  # head without a team sees only their own
    await _client("Other", head["id"])

    response = await as_head.get("/clients/export", params={"format": "csv", "q": "ромашка"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    assert ".csv" in response.headers["content-disposition"]
    first, rows = _csv_rows(response)
    assert first.startswith("# Exported by Hanna Head (head) at ")
    assert first.endswith("; filter: Search: ромашка")
    stamp = first.removeprefix("# Exported by Hanna Head (head) at ").split(";")[0]
    assert stamp[:4].isdigit() and "T" in stamp and stamp[-6] in "+-"
    header, *data = rows
    assert header[:3] == ["ID", "Name", "Type"]
    assert sorted(r[1] for r in data) == ["ООО «Ромашка»", "Ромашка-Сервис"]
    phone = data[[r[1] for r in data].index("ООО «Ромашка»")][header.index("Phone")]
    assert phone == "8 (912) 345-67-89"

    [entry] = await _entries("export")
    assert entry["actor_id"] == head["id"] and entry["object_type"] == "clients"
    assert entry["changes"] == {"rows": 2, "filter": "Search: ромашка", "format": "csv"}
    assert "2" in entry["summary"] and "ромашка" in entry["summary"]


async def test_xlsx_export_carries_the_exporter_in_its_properties_and_first_row(
    as_admin: Any, admin: dict[str, Any], manager: dict[str, Any]
) -> None:
    await _client("ООО «Ромашка»", manager["id"])
    await _client('=HYPERLINK("http://evil","x")', manager["id"])
    response = await as_admin.get(
        "/clients/export", params={"format": "xlsx", "responsible": manager["id"]}
    )
    assert response.status_code == 200, response.text
    assert "spreadsheetml" in response.headers["content-type"]
    book = load_workbook(io.BytesIO(response.content))
    assert book.properties.creator == "Anna Admin (admin)"
    assert book.properties.description.startswith("Exported by Anna Admin (admin) at ")
    assert book.properties.description.endswith("filter: Manager: Max Manager")
    assert book.properties.title
    sheet = book.active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][0] == book.properties.description
    assert rows[1][:2] == ("ID", "Name")
    names = sorted(r[1] for r in rows[2:])
    assert names == ['=HYPERLINK("http://evil","x")', "ООО «Ромашка»"]
    formula_cell = next(c for c in sheet.iter_rows(min_row=3) if c[1].value.startswith("="))[1]
    assert formula_cell.data_type == "s", "a client's name never becomes a formula"
    [entry] = await _entries("export")
    assert entry["changes"]["rows"] == 2 and entry["changes"]["format"] == "xlsx"


async def test_csv_neutralises_formulas_but_keeps_phones() -> None:
    zone = exports.ZoneInfo("UTC")
    assert exports._csv_value("=1+2", zone) == "'=1+2"
    assert exports._csv_value("@SUM(A1)", zone) == "'@SUM(A1)"
    assert exports._csv_value("+44 20 7946 0958", zone) == "+44 20 7946 0958"
    assert exports._csv_value("-5", zone) == "-5"


async def test_deal_and_task_exports_follow_their_list_filters_and_hidden_fields(
    as_head: Any, head: dict[str, Any]
) -> None:
    client_id = await _client("Acme", head["id"])
    pipeline = (await deals.list_pipelines())[0] if await deals.list_pipelines() else None
    if pipeline is None:
        await deals.create_pipeline("Sales")
        pipeline = (await deals.list_pipelines())[0]
    stage = pipeline["stages"][0]
    for title in ("Big deal", "Small deal"):
        await deals.create_deal(
            {
                "title": title,
                "client": client_id,
                "pipeline": pipeline["id"],
                "stage": stage["id"],
                "amount": "1500",
                "responsible": head["id"],
            },
            head["id"],
        )
    response = await as_head.get("/deals/export", params={"format": "csv", "q": "big"})
    assert response.status_code == 200, response.text
    _first, (header, *data) = _csv_rows(response)
    assert [r[header.index("Deal")] for r in data] == ["Big deal"]
    assert data[0][header.index("Amount")] == "1500"

    await Role.update({Role.hidden_fields: ["deal.amount"]}).where(Role.code == "head")
    response = await as_head.get("/deals/export", params={"format": "csv"})
    _first, (header, *data) = _csv_rows(response)
    assert "Amount" not in header and "Currency" not in header and len(data) == 2

    due = (utcnow() + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
    await tasks.create_task({"title": "Call Acme", "due_at": due, "assignee": head["id"]}, None)
    response = await as_head.get("/tasks/export", params={"format": "csv", "view": "upcoming"})
    first, (header, *data) = _csv_rows(response)
    assert first.endswith("filter: Tasks: Upcoming; Assignee: Hanna Head")
    assert [r[header.index("Task")] for r in data] == ["Call Acme"]
    exported = [e["object_type"] for e in await _entries("export")]
    assert exported == ["deals", "deals", "tasks"]


async def test_an_htmx_click_becomes_a_download_of_the_current_filter(
    as_head: Any, head: dict[str, Any]
) -> None:
    response = await as_head.get(
        "/clients/export?format=csv&q=acme", headers={"hx-request": "true"}
    )
    assert response.status_code == 200
    assert response.headers["hx-redirect"] == "/clients/export?format=csv&q=acme"
    assert await _entries("export") == []


async def test_unknown_format_is_invalid_input(as_head: Any) -> None:
    assert (await as_head.get("/clients/export?format=pdf")).status_code == 422


# --- limits -----------------------------------------------------------------------------


async def test_past_the_per_export_limit_the_export_is_refused_not_truncated(
    as_head: Any, head: dict[str, Any]
) -> None:
    for name in ("A", "B", "C"):
        await _client(name, head["id"])
    await _set_limits("head", export_max_rows=2)

    response = await as_head.get("/clients/export?format=csv")
    assert response.status_code == 403
    assert "more than 2 rows" in response.text and "at most 2 rows at a time" in response.text
    assert 'href="/clients"' in response.text  # back to the list
    json_response = await as_head.get(
        "/clients/export?format=xlsx", headers={"accept": "application/json"}
    )
    assert json_response.status_code == 403
    assert "at most 2 rows" in json_response.json()["detail"]
    assert await _entries("export") == [], "a refused export is not an export"
    refused = await _entries("export.refused")
    assert [r["changes"]["reason"] for r in refused] == ["per_export", "per_export"]
    assert refused[0]["changes"]["asked"] == "more than 2" and "rows" not in refused[0]["changes"]

    response = await as_head.get("/clients/export", params={"format": "csv", "q": "a"})
    assert response.status_code == 200, "within the limit"
    assert len(_csv_rows(response)[1]) == 2  # header + one row


async def test_past_the_daily_limit_the_export_is_refused_until_tomorrow(
    as_head: Any, head: dict[str, Any]
) -> None:
    for name in ("Alpha", "Beta", "Gamma"):
        await _client(name, head["id"])
    await _set_limits("head", export_daily_rows=5)
    # yesterday's exports do not count against today
    await audit.record(
        "export",
        "clients",
        "",
        "",
        {"rows": 100},
        actor=head,
        at=tasks.day_bounds()[0] - timedelta(minutes=1),
    )

    assert (await as_head.get("/clients/export?format=csv")).status_code == 200  # 3 of 5
    response = await as_head.get("/clients/export?format=csv")
    assert response.status_code == 429
    assert "you asked for 3 rows" in response.text
    assert "5 rows a day; 2 are left today" in response.text
    response = await as_head.get(
        "/clients/export", params={"format": "csv", "q": "alpha"}
    )  # 1 more fits
    assert response.status_code == 200
    response = await as_head.get(
        "/clients/export?format=csv&q=beta", headers={"accept": "application/json"}
    )
    assert response.status_code == 200  # exactly at the limit: 5 of 5
    response = await as_head.get(
        "/clients/export?format=csv&q=gamma", headers={"accept": "application/json"}
    )
    assert response.status_code == 429
    assert "0 are left today" in response.json()["detail"]
    today = [e for e in await _entries("export") if e["changes"]["rows"] != 100]
    assert [e["changes"]["rows"] for e in today] == [3, 1, 1]
    refused = await _entries("export.refused")
    assert [(r["changes"]["reason"], r["changes"]["asked"]) for r in refused] == [
        ("daily", "3"),
        ("daily", "1"),
    ]


async def test_admins_have_no_limits(as_admin: Any, admin: dict[str, Any]) -> None:
    await _set_limits("admin", export_max_rows=1, export_daily_rows=1)
    for name in ("A", "B", "C"):
        await _client(name, admin["id"])
    response = await as_admin.get("/clients/export?format=csv")
    assert response.status_code == 200 and len(_csv_rows(response)[1]) == 4


async def test_export_pages_through_the_whole_list(
    as_head: Any, head: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exports, "PAGE", 2)
    for i in range(5):
        await _client(f"Client {i}", head["id"])
    response = await as_head.get("/clients/export?format=csv&sort=created")
    _first, (_header, *data) = _csv_rows(response)
    assert sorted(r[1] for r in data) == [f"Client {i}" for i in range(5)]


async def test_audit_log_export_is_itself_audited(as_admin: Any, admin: dict[str, Any]) -> None:
    await audit.record("role.update", "role", "head", "Head", {"name": ["A", "B"]}, actor=admin)
    await audit.record("client.view", "client", 7, "", actor=admin, flagged=True)
    response = await as_admin.get(
        "/admin/audit/export", params={"format": "csv", "action": "role.*"}
    )
    assert response.status_code == 200, response.text
    first, (header, *data) = _csv_rows(response)
    assert first.endswith("filter: Action: role.*")
    assert [r[header.index("Action")] for r in data] == ["role.update"]
    assert json.loads(data[0][header.index("Changes")]) == {"name": ["A", "B"]}
    [entry] = await _entries("export")
    assert entry["object_type"] == "audit" and entry["changes"]["rows"] == 1
    assert (await as_admin.get("/admin/audit/export?format=csv&to=oops")).status_code == 422


# --- anomaly alert ----------------------------------------------------------------------


async def test_too_many_card_views_in_an_hour_alert_the_admins_once(
    as_admin: Any, admin: dict[str, Any], manager: dict[str, Any], low_threshold: None
) -> None:
    from tests.plugins.sample import hooks as sample

    other_admin = await users.create_user("root", "Rita Root", "root-password", role="admin")
    ids = [await _client(f"Client {i}", manager["id"]) for i in range(5)]
    sample.RECEIVED_EVENTS.clear()
    with access.acting_as(await access.for_user(manager)):
        for client_id in ids[:3]:
            await audit.record_view(client_id)
        for _ in range(3):
            await audit.record_view(ids[0])  # reopening a card is not copying the base
        assert await _entries("security.anomaly") == [], "at the threshold: no alert yet"
        await audit.record_view(ids[3])  # 4 cards > 3
        await audit.record_view(ids[4])  # still within the hour: no second alert
        assert not await audit.check_activity(manager)

    [alert] = await _entries("security.anomaly")
    assert alert["flagged"] and alert["actor_id"] == manager["id"]
    assert alert["changes"] == {"views": 4, "exported_rows": 0, "threshold": 3}
    for admin_user in (admin, other_admin):
        [note] = await notifications.list_for_user(admin_user["id"])
        assert note["kind"] == "security" and "Max Manager" in note["text"]
        assert note["url"] == f"/admin/audit?actor={manager['id']}"
    assert await Notification.count().where(Notification.user == manager["id"]) == 0
    alerts = [e for e in sample.RECEIVED_EVENTS if e.name == "security.alert"]
    assert [(e.user_id, e.views, e.exported_rows) for e in alerts] == [(manager["id"], 4, 0)]

    page = await as_admin.get(f"/admin/audit?actor={manager['id']}&flagged=1")
    assert page.text.count('class="audit-flagged"') == 1


async def test_every_card_view_is_logged_but_only_a_first_view_checks_the_pace(
    db: None, manager: dict[str, Any], monkeypatch: Any
) -> None:
    checks: list[int] = []

    async def counting_check(user: dict[str, Any]) -> bool:
        checks.append(int(user["id"]))
        return False

    monkeypatch.setattr(audit, "check_activity", counting_check)
    first, second = await _client("First", manager["id"]), await _client("Second", manager["id"])
    with access.acting_as(await access.for_user(manager)):
        for client_id in (first, first, second, first, second):
            await audit.record_view(client_id)
    assert checks == [manager["id"]] * 2, "a repeat within the hour cannot raise the pace"
    views = await _entries("client.view")
    assert [v["object_id"] for v in views] == [
        str(c) for c in (first, first, second, first, second)
    ]
    assert all(v["actor_id"] == manager["id"] and v["object_type"] == "client" for v in views)
    assert all(v["actor_name"] == manager["username"] and not v["flagged"] for v in views)
    assert all(v["changes"] == {} and v["occurred_at"].tzinfo is not None for v in views)

    long_ago = utcnow() - timedelta(hours=2)
    await audit.record("client.view", "client", "999", "", actor=manager, at=long_ago)
    with access.acting_as(await access.for_user(manager)):
        await audit.record_view(999)
    assert len(checks) == 3, "a view from before the window does not make a repeat"


async def test_an_alert_older_than_an_hour_does_not_silence_a_new_one(
    db: None, manager: dict[str, Any], low_threshold: None
) -> None:
    long_ago = utcnow() - timedelta(hours=2)
    await audit.record("security.anomaly", "user", manager["id"], "", actor=manager, at=long_ago)
    for i in range(4):
        await audit.record("client.view", "client", i, "", actor=manager, at=long_ago)
    assert not await audit.check_activity(manager), "old views are out of the window"
    for i in range(4):
        await audit.record("client.view", "client", i, "", actor=manager)
    assert await audit.check_activity(manager)


async def test_exported_rows_count_towards_the_alert(
    as_head: Any, head: dict[str, Any], admin: dict[str, Any], low_threshold: None
) -> None:
    for name in ("A", "B", "C", "D"):
        await _client(name, head["id"])
    await audit.record("export", "audit", "", "", {"rows": 50}, actor=head)  # not client data
    assert (await as_head.get("/clients/export?format=csv")).status_code == 200
    [alert] = await _entries("security.anomaly")
    assert alert["changes"]["exported_rows"] == 4 and alert["actor_id"] == head["id"]
    assert len(await notifications.list_for_user(admin["id"])) == 1
