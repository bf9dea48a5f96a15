"""Tasks: validation, complete/reopen with timeline and events, the views, the web."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from core import events
from core.runtime import get_runtime
from core.services import clients, notifications, tasks, timeline, users
from core.services.common import NotFound, utcnow
from core.tables import Deal, Pipeline, Stage, Task
from core.validation import ValidationError
from tests.support import field_error, post


def _local(dt: datetime) -> str:
    zone = ZoneInfo(get_runtime().settings.timezone)
    return dt.astimezone(zone).strftime("%Y-%m-%dT%H:%M")


async def _client(manager: dict[str, Any], name: str = "Acme") -> int:
    return await clients.create_client(
        {"kind": "company", "name": name, "responsible": manager["id"]}, manager["id"]
    )


async def _deal(client_id: int, manager: dict[str, Any], amount: int = 0) -> int:
    now = utcnow()
    pipeline = await Pipeline.insert(Pipeline(name="Sales", position=0)).returning(Pipeline.id)
    stage = await Stage.insert(
        Stage(pipeline=pipeline[0]["id"], name="New", position=0, outcome="open")
    ).returning(Stage.id)
    rows = await Deal.insert(
        Deal(
            title="Big deal",
            client=client_id,
            pipeline=pipeline[0]["id"],
            stage=stage[0]["id"],
            amount_minor=amount,
            responsible=manager["id"],
            created_at=now,
            updated_at=now,
        )
    ).returning(Deal.id)
    return int(rows[0]["id"])


def _data(**overrides: Any) -> dict[str, Any]:
    return {
        "title": "Call back",
        "due_at": _local(utcnow() + timedelta(hours=2)),
        "priority": "2",
        **overrides,
    }


@pytest.fixture
def captured() -> Any:
    seen: list[events.DomainEvent] = []
    events.set_dispatcher(seen.append)
    yield seen
    events.set_dispatcher(None)


async def test_create_task_with_client(manager, captured):
    client_id = await _client(manager)
    due = "2031-03-04T15:30"
    task_id = await tasks.create_task(
        _data(due_at=due, client=str(client_id), priority="3"), manager["id"]
    )
    task = await tasks.get_task(task_id)
    zone = ZoneInfo(get_runtime().settings.timezone)
    assert task["due_at"] == datetime(2031, 3, 4, 15, 30, tzinfo=zone).astimezone(UTC)
    assert task["assignee"] == manager["id"]  # defaults to the actor
    assert task["priority"] == 3
    assert task["client_name"] == "Acme"
    entries, _ = await timeline.page(client_id)
    created = [e for e in entries if e["kind"] == "task.created"]
    assert created and created[0]["payload"]["title"] == "Call back"
    assert created[0]["payload"]["assignee"] == "Max Manager"
    assert created[0]["payload"]["due_at"].startswith("2031-03-04T15:30")
    assert next(e for e in captured if isinstance(e, events.TaskCreated)).task_id == task_id
    assert [t["id"] for t in await tasks.open_for_client(client_id)] == [task_id]


async def test_create_task_validation(manager):
    with pytest.raises(ValidationError) as exc:
        await tasks.create_task(_data(title="", due_at="tomorrow"), manager["id"])
    assert set(exc.value.errors) == {"title", "due_at"}
    with pytest.raises(ValidationError) as exc:
        await tasks.create_task(_data(due_at=""), manager["id"])
    assert "due_at" in exc.value.errors
    with pytest.raises(ValidationError) as exc:
        await tasks.create_task(_data(title="x" * 256, priority="7"), manager["id"])
    assert set(exc.value.errors) == {"title", "priority"}
    with pytest.raises(ValidationError) as exc:
        await tasks.create_task(_data(assignee="9999"), manager["id"])
    assert "assignee" in exc.value.errors
    with pytest.raises(ValidationError) as exc:
        await tasks.create_task(_data(client="9999"), manager["id"])
    assert "client" in exc.value.errors
    assert await Task.count() == 0


async def test_deal_sets_client_and_mismatch_is_an_error(manager):
    first = await _client(manager, "First")
    second = await _client(manager, "Second")
    deal_id = await _deal(first, manager)
    task_id = await tasks.create_task(_data(deal=str(deal_id)), manager["id"])
    task = await tasks.get_task(task_id)
    assert task["client"] == first and task["deal_title"] == "Big deal"
    with pytest.raises(ValidationError) as exc:
        await tasks.create_task(_data(deal=str(deal_id), client=str(second)), manager["id"])
    assert "deal" in exc.value.errors


async def test_complete_twice_and_reopen(manager, captured):
    client_id = await _client(manager)
    task_id = await tasks.create_task(_data(client=client_id), manager["id"])
    captured.clear()
    assert await tasks.complete_task(task_id, manager["id"]) is True
    task = await tasks.get_task(task_id)
    assert task["done_at"] is not None and task["completed_by"] == manager["id"]
    assert [type(e) for e in captured] == [events.TaskCompleted]
    assert captured[0].task_id == task_id and captured[0].assignee_id == manager["id"]

    assert await tasks.complete_task(task_id, manager["id"]) is False
    assert len(captured) == 1
    entries, _ = await timeline.page(client_id)
    assert [e["kind"] for e in entries].count("task.completed") == 1
    assert await tasks.open_for_client(client_id) == []

    assert await tasks.reopen_task(task_id, manager["id"]) is True
    task = await tasks.get_task(task_id)
    assert task["done_at"] is None and task["completed_by"] is None
    entries, _ = await timeline.page(client_id)
    assert entries[0]["kind"] == "task.reopened"
    assert await tasks.reopen_task(task_id, manager["id"]) is False


async def test_get_unknown_task(db):
    with pytest.raises(NotFound):
        await tasks.get_task(12345)


async def test_update_task_resets_reminder(manager):
    task_id = await tasks.create_task(_data(), manager["id"])
    await Task.update({Task.reminded_at: utcnow()}).where(Task.id == task_id)
    await tasks.update_task(task_id, _data(title="Renamed", due_at="2032-01-01T09:00"), None)
    task = await tasks.get_task(task_id)
    assert task["title"] == "Renamed" and task["reminded_at"] is None
    assert task["assignee"] == manager["id"]


async def test_my_tasks_views(manager, admin):
    zone = ZoneInfo(get_runtime().settings.timezone)
    now = datetime.now(zone).replace(hour=12, minute=0, second=0, microsecond=0)
    titles = {
        "yesterday": now - timedelta(days=1),
        "this morning": now - timedelta(hours=3),
        "this evening": now + timedelta(hours=6),
        "tomorrow": now + timedelta(days=1),
    }
    ids = {}
    for title, due in titles.items():
        ids[title] = await tasks.create_task(
            _data(title=title, due_at=due.strftime("%Y-%m-%dT%H:%M")), manager["id"]
        )
    await tasks.create_task(_data(title="not mine", assignee=admin["id"]), manager["id"])
    done_id = await tasks.create_task(_data(title="finished"), manager["id"])
    await tasks.complete_task(done_id, manager["id"])

    def titles_of(rows: list[dict[str, Any]]) -> list[str]:
        return [r["title"] for r in rows]

    assert titles_of(await tasks.my_tasks(manager["id"], "overdue", now)) == ["yesterday"]
    today = await tasks.my_tasks(manager["id"], "today", now)
    assert titles_of(today) == ["this morning", "this evening"]
    assert today[0]["overdue"] and not today[1]["overdue"]
    assert titles_of(await tasks.my_tasks(manager["id"], "upcoming", now)) == ["tomorrow"]
    assert titles_of(await tasks.my_tasks(manager["id"], "done", now)) == ["finished"]
    assert await tasks.counts(manager["id"], now) == {"today": 2, "overdue": 1, "upcoming": 1}


async def test_tab_badges_stop_counting_at_the_cap(as_manager, manager, monkeypatch):
    monkeypatch.setattr(tasks, "COUNT_CAP", 2)
    tomorrow = _local(utcnow() + timedelta(days=2))
    for n in range(4):
        await tasks.create_task(_data(title=f"later {n}", due_at=tomorrow), manager["id"])
    assert (await tasks.counts(manager["id"]))["upcoming"] == 3
    page = await as_manager.get("/tasks?view=upcoming")
    assert '<span class="badge">2+</span>' in page.text


# --- web ---------------------------------------------------------------------------------


async def test_task_pages(as_manager, manager):
    client_id = await _client(manager)
    form = await as_manager.get(f"/tasks/new?client={client_id}")
    assert form.status_code == 200 and "Acme" in form.text

    bad = await post(as_manager, "/tasks", {"title": "", "due_at": "nope", "client": client_id})
    assert bad.status_code == 422
    assert field_error(bad.text, "title") and field_error(bad.text, "due_at")

    r = await post(
        as_manager,
        "/tasks",
        _data(title="Send the offer", client=client_id),
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == f"/clients/{client_id}"
    task_id = (await Task.select(Task.id).first())["id"]

    card = await as_manager.get(f"/clients/{client_id}")
    assert "Send the offer" in card.text and f"/tasks/{task_id}/complete?panel=client" in card.text

    listing = await as_manager.get("/tasks?view=today")
    assert listing.status_code == 200 and "Send the offer" in listing.text
    page = await as_manager.get(f"/tasks/{task_id}")
    assert page.status_code == 200 and "Send the offer" in page.text
    assert (await as_manager.get("/tasks/99999")).status_code == 404

    edit = await as_manager.get(f"/tasks/{task_id}/edit")
    assert edit.status_code == 200 and "Send the offer" in edit.text
    r = await post(
        as_manager,
        f"/tasks/{task_id}/edit",
        _data(title="Send the new offer", client=client_id),
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert (await tasks.get_task(task_id))["title"] == "Send the new offer"

    panel = await post(
        as_manager, f"/tasks/{task_id}/complete?panel=client", headers={"hx-request": "true"}
    )
    assert panel.status_code == 200
    assert 'id="client-tasks"' in panel.text and "No open tasks" in panel.text
    card = await as_manager.get(f"/clients/{client_id}")
    assert "entry-task-completed" in card.text

    row = await post(as_manager, f"/tasks/{task_id}/reopen", headers={"hx-request": "true"})
    assert row.status_code == 200 and row.text.strip().startswith(f'<tr id="task-{task_id}"')
    assert (await tasks.get_task(task_id))["done_at"] is None

    r = await post(as_manager, f"/tasks/{task_id}/complete", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/tasks/{task_id}"


async def test_task_without_client_redirects_to_list(as_manager, manager):
    r = await post(as_manager, "/tasks", _data(title="Plan the week"), follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/tasks"
    mismatch = await post(as_manager, "/tasks", _data(assignee="424242"))
    assert mismatch.status_code == 422 and field_error(mismatch.text, "assignee")


# --- notifications -------------------------------------------------------------------------


async def test_notifications_badge_and_read(as_manager, manager):
    other = await users.create_user("other", "Olga Other", "other-password")
    assert (await as_manager.get("/notifications/badge")).text == ""
    first = await notifications.notify(manager["id"], "task.due", "Call Acme", "/tasks/1")
    await notifications.notify(manager["id"], "task.due", "Send offer", "https://evil.example")
    foreign = await notifications.notify(other["id"], "task.due", "Not yours", "/tasks/2")

    assert await notifications.unread_count(manager["id"]) == 2
    badge = await as_manager.get("/notifications/badge")
    assert badge.text == '<span class="badge">2</span>'

    page = await as_manager.get("/notifications")
    assert "Call Acme" in page.text and "Not yours" not in page.text

    r = await post(as_manager, f"/notifications/{first}/read", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/tasks/1"
    assert await notifications.unread_count(manager["id"]) == 1

    r = await post(as_manager, f"/notifications/{foreign}/read", follow_redirects=False)
    assert r.status_code == 404
    assert await notifications.unread_count(other["id"]) == 1
    with pytest.raises(NotFound):
        await notifications.mark_read(manager["id"], foreign)

    r = await post(as_manager, "/notifications/read-all", follow_redirects=False)
    assert r.status_code == 303
    assert await notifications.unread_count(manager["id"]) == 0
    assert await notifications.unread_count(other["id"]) == 1
    assert (await as_manager.get("/notifications/badge")).text == ""
    rows = await notifications.list_for_user(manager["id"])
    assert len(rows) == 2 and all(r["read_at"] for r in rows)


async def test_timeline_templates_render(app):
    env = app.template_engine.engine
    entry = {
        "kind": "task.created",
        "payload": {
            "task_id": 7,
            "title": "Call <back>",
            "due_at": "2031-03-04T15:30:00+03:00",
            "assignee": "Max Manager",
        },
    }
    html = env.get_template("core/timeline/task_created.html").render(entry=entry)
    assert 'href="/tasks/7"' in html and "Call &lt;back&gt;" in html
    assert "2031-03-04 15:30" in html and "Max Manager" in html
    for kind in ("completed", "reopened"):
        html = env.get_template(f"core/timeline/task_{kind}.html").render(entry=entry)
        assert 'href="/tasks/7"' in html
