"""Every hook in core/hookspecs.py is documented, in docs/plugins.md, and tested here
through the sample plugin (tests/plugins/sample), one `test_hook_<name>` each."""

from __future__ import annotations

import inspect
import sys
from datetime import date
from typing import Any

import pytest

from core import hookdocs
from core.hooktypes import MetricScope
from tests.plugins.sample import hooks as sample
from tests.support import post

HOOK_NAMES = [name for name, _fn in hookdocs.hook_functions()]


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_hookspec_is_documented(name: str) -> None:
    doc = inspect.getdoc(dict(hookdocs.hook_functions())[name]) or ""
    assert len(doc.splitlines()) >= 3, f"{name}: document the arguments and return value"
    assert "Example" in doc, f"{name}: the docstring needs an example"


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_hook_has_a_test(name: str) -> None:
    tests = [n for n in dir(sys.modules[__name__]) if n.startswith("test_hook_")]
    assert f"test_hook_{name}" in tests, f"hook {name} has no test_hook_{name} in {__name__}"


def test_docs_hook_reference_is_current() -> None:
    text = hookdocs.DOC.read_text(encoding="utf-8")
    assert hookdocs.updated_document(text) == text, "run `python -m core.hookdocs`"


def test_sample_plugin_implements_every_hook(runtime: Any) -> None:
    implemented = {
        name
        for name in HOOK_NAMES
        for impl in getattr(runtime.plugins.pm.hook, name).get_hookimpls()
        if impl.plugin_name == "sample"
    }
    assert implemented == set(HOOK_NAMES)


async def _client_id(manager: dict[str, Any], name: str = "Hook Client") -> int:
    from core.services import clients

    return await clients.create_client(
        {"name": name, "phones": "+7 912 000-11-22", "responsible": manager["id"]}, manager["id"]
    )


async def test_hook_piccolo_apps(db: None, manager: dict[str, Any]) -> None:
    from core.db import app_modules
    from tests.plugins.sample.tables import SampleMark

    assert "tests.plugins.sample.piccolo_app" in app_modules()
    client_id = await _client_id(manager)
    await SampleMark.insert(SampleMark(client=client_id, label="vip"))
    assert await SampleMark.select(SampleMark.label).first() == {"label": "vip"}


async def test_hook_route_handlers(client: Any, as_manager: Any) -> None:
    page = await as_manager.get("/p/sample/hello")
    assert page.status_code == 200
    assert "Max Manager" in page.text
    as_manager.cookies.clear()
    anonymous = await as_manager.get("/p/sample/hello", follow_redirects=False)
    assert anonymous.status_code in (302, 303, 307)
    assert anonymous.headers["location"].startswith("/login")
    public = await as_manager.post("/p/sample/hook")  # no session, no CSRF token
    assert public.json() == {"ok": True}


async def test_hook_menu_items(as_manager: Any, runtime: Any) -> None:
    page = await as_manager.get("/clients")
    assert 'href="/p/sample/hello"' in page.text
    assert "/p/sample/admin" not in page.text, "items behind a permission stay hidden"


async def test_hook_card_tabs(as_manager: Any, manager: dict[str, Any]) -> None:
    client_id = await _client_id(manager)
    card = await as_manager.get(f"/clients/{client_id}")
    assert "Sample tab" in card.text
    assert f'hx-get="/p/sample/clients/{client_id}/tab"' in card.text
    tab = await as_manager.get(f"/p/sample/clients/{client_id}/tab")
    assert tab.text == f"sample tab of {client_id}"


async def test_hook_timeline_kinds(as_manager: Any, manager: dict[str, Any]) -> None:
    from core.services import timeline

    client_id = await _client_id(manager)
    await timeline.add_entry(client_id, "sample.ping", {"message": "pong from plugin"})
    card = await as_manager.get(f"/clients/{client_id}")
    assert '<div class="sample-ping">pong from plugin</div>' in card.text


async def test_hook_domain_event(as_manager: Any, manager: dict[str, Any]) -> None:
    from core import events
    from core.services.common import write

    sample.RECEIVED_EVENTS.clear()
    response = await post(as_manager, "/clients", {"name": "Evented", "responsible": manager["id"]})
    assert response.status_code == 200
    assert [e.name for e in sample.RECEIVED_EVENTS] == ["client.created"]

    sample.RECEIVED_EVENTS.clear()
    with pytest.raises(RuntimeError):
        async with write():
            events.emit(events.ClientDeleted(client_id=1))
            raise RuntimeError("rolled back")
    assert sample.RECEIVED_EVENTS == [], "events of a rolled-back transaction are dropped"


def test_hook_scheduled_jobs(runtime: Any) -> None:
    from core.jobs.scheduler import build_schedule

    names = {job.name for job in build_schedule(runtime)}
    assert {"sample.tick", "core.task_reminders"} <= names


async def test_hook_permissions(db: None, runtime: Any) -> None:
    from core import access
    from core.services import roles

    assert access.registered_permissions()["sample.admin"].label == "Administer the sample"
    head = await access.for_user({"id": 1, "role": "head"})
    manager = await access.for_user({"id": 2, "role": "manager"})
    assert head.can("sample.admin") and not manager.can("sample.admin")
    # An admin's decision outlives the plugin's defaults: revoke, re-sync, still revoked.
    role = await roles.get_role("head")
    form = {
        "name": role["name"],
        "permissions": [p for p in role["permissions"] if p != "sample.admin"],
    }
    form.update({f"scope:{code}": scope for code, scope in role["scopes"].items()})
    await roles.update_role("head", form)
    await roles.sync_roles()
    assert not (await access.for_user({"id": 1, "role": "head"})).can("sample.admin")


async def test_hook_record_types(db: None, runtime: Any) -> None:
    from core import access

    sample = access.registered_record_types()["sample.mark"]
    assert ("sample.mark.label", "Mark labels") in sample.hideable_fields
    head = await access.for_user({"id": 1, "role": "head"})
    manager = await access.for_user({"id": 2, "role": "manager"})
    assert head.scope("sample.mark") == "all", "the plugin's default scope for head"
    assert head.scope("client") == "team" and manager.scope("sample.mark") == "own"


async def test_hook_dashboard_widgets(as_manager: Any) -> None:
    page = await as_manager.get("/")
    assert "Sample widget" in page.text
    assert 'hx-get="/p/sample/hello"' in page.text


async def test_hook_kpi_metrics(runtime: Any) -> None:
    metrics = {m.key: m for m in runtime.plugins.collect("kpi_metrics")}
    value = await metrics["sample.marks"].compute(date(2026, 1, 1), date(2026, 2, 1), MetricScope())
    assert value == 42.0


async def test_hook_lookup_client(db: None, manager: dict[str, Any]) -> None:
    from core.services.clients import find_client

    first = await _client_id(manager, "First")
    second = await _client_id(manager, "Second")
    from core.services import clients

    await clients.update_client(
        second,
        {"name": "Second", "phones": "8 (912) 345-67-89", "responsible": manager["id"]},
        manager["id"],
    )
    assert await find_client(phone="9123456789") == second, "core lookup, any phone format"
    assert await find_client(phone="+7 (495) 000-00-00") == first, (
        "the plugin's tryfirst answer wins"
    )
    assert await find_client(phone="not a phone") is None


def test_hook_data_formats(runtime: Any) -> None:
    formats = {f.key: f for f in runtime.plugins.collect("data_formats")}
    lines = formats["sample.lines"]
    assert lines.importer(lines.exporter([{"name": "A"}, {"name": "B"}])) == [
        {"name": "A"},
        {"name": "B"},
    ]


async def test_hook_jinja_environment(as_manager: Any) -> None:
    page = await as_manager.get("/p/sample/hello")
    assert '<p id="hello">HELLO! Max Manager</p>' in page.text


def test_hook_backup_items(runtime: Any) -> None:
    items = runtime.plugins.collect("backup_items")
    # The mail plugin (enabled in the test session) backs up its attachment folder too.
    assert sorted(item.name for item in items) == ["mail", "sample"]


async def test_hook_background_services(runtime: Any) -> None:
    import asyncio

    from core.hooktypes import BackgroundService
    from core.jobs.services import BackgroundServices, supervise

    sample.SERVICE_LOG.clear()
    services = BackgroundServices(runtime)
    assert "sample.listener" in [s.name for s in services.services]
    services.start()
    for _ in range(100):
        if sample.SERVICE_LOG:
            break
        await asyncio.sleep(0.01)
    await services.stop()
    assert sample.SERVICE_LOG == ["started", "stopped"], "started once, cancelled on stop"

    runs: list[int] = []

    async def crashes() -> None:
        runs.append(1)
        raise RuntimeError("PBX gone")

    task = asyncio.create_task(supervise(BackgroundService("crashy", crashes), first_pause=0.01))
    await asyncio.sleep(0.2)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert 3 <= len(runs) < 20, "a failing service is restarted, with a growing pause"


async def test_hook_phone_actions(as_manager: Any, manager: dict[str, Any]) -> None:
    client_id = await _client_id(manager)
    card = await as_manager.get(f"/clients/{client_id}")
    assert 'data-phone-action="sample.sms"' in card.text
    assert 'hx-post="/p/sample/sms"' in card.text
    assert 'hx-vals=\'{"number": "+79120001122"}\'' in card.text
    assert 'data-phone-action="sample.admin"' not in card.text, "needs a permission"
    listed = await as_manager.get("/clients")
    assert 'data-phone-action="sample.sms"' in listed.text
    answer = await post(as_manager, "/p/sample/sms", {"number": "+79120001122"})
    assert answer.text == "SMS to +79120001122 queued"
