"""Who may call which route, and which records each role sees (own / team / all)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from litestar.routes import HTTPRoute

from tests.support import csrf_token, login, post

PARAM = re.compile(r"\{(\w+)(?::(\w+))?\}")


def _concrete(path: str) -> str:
    return PARAM.sub(lambda m: "1" if m.group(2) == "int" else "x", path)


def _handlers(app: Any) -> list[tuple[str, str, Any]]:
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            for method in sorted(handler.http_methods):
                if method in ("HEAD", "OPTIONS"):
                    continue
                found.append((method, route.path, handler))
    return found


async def _user(username: str, role: str, team: int | None = None) -> dict[str, Any]:
    from core.services import users
    from core.tables import User

    user = await users.create_user(username, username.title(), f"{username}-password", role=role)
    if team is not None:
        await User.update({User.team: team}).where(User.id == user["id"])
    return user


async def _as(client: Any, username: str) -> Any:
    client.cookies.clear()
    await login(client, username, f"{username}-password")
    return client


async def test_every_route_declares_who_may_call_it(app: Any) -> None:
    undeclared = [
        f"{method} {path}"
        for method, path, handler in _handlers(app)
        if not (
            handler.opt.get("public")
            or handler.opt.get("any_user")
            or handler.opt.get("permission")
        )
    ]
    assert undeclared == []


async def test_every_route_requires_login_and_its_permission(app: Any, client: Any) -> None:
    """Anonymous: 401/redirect. A role without permissions: 403 on every permission route."""
    from core.services import api_tokens, roles

    await roles.create_role("nobody", {"name": "Nobody"})
    nobody = await _user("nobody", "nobody")
    bearer = await api_tokens.create_token(nobody["id"], "test")
    await client.get("/login")
    token = csrf_token(client)
    routes = _handlers(app)
    public = {f"{m} {p}" for m, p, h in routes if h.opt.get("public")}
    assert public == {
        "GET /login",
        "POST /login",
        "POST /p/sample/hook",
        "GET /p/mail/unsubscribe/{token:str}",  # signed link in mailings, asks before acting
        "POST /p/mail/unsubscribe/{token:str}",  # the confirmation and RFC 8058 one-click
        "POST /p/telephony/webhook",  # bearer token checked by the handler
        "GET /static/{file_path:path}",
        "GET /healthz",
        "GET /readyz",
        *{f"{m} {p}" for m, p, h in routes if p.startswith("/login/")},
    }, "public routes are few and deliberate"
    for method, path, handler in routes:
        if handler.opt.get("public"):
            continue
        response = await client.request(
            method, _concrete(path), headers={"x-csrftoken": token}, follow_redirects=False
        )
        assert response.status_code in (401, 302, 303, 307), f"{method} {path} without login"
        if response.status_code != 401:
            assert response.headers["location"].startswith("/login"), f"{method} {path}"
    await _as(client, "nobody")
    token = csrf_token(client)
    for method, path, handler in routes:
        permission = handler.opt.get("permission")
        if not permission:
            continue
        headers = {"x-csrftoken": token}
        if path.startswith("/api/"):
            headers["authorization"] = f"Bearer {bearer}"
        response = await client.request(
            method, _concrete(path), headers=headers, follow_redirects=False
        )
        assert response.status_code == 403, f"{method} {path} needs {permission}"


async def test_csrf_token_is_required_for_html_writes(as_manager: Any) -> None:
    from core.tables import Client

    refused = await as_manager.post("/clients", data={"name": "No token"})
    assert refused.status_code == 403
    assert not await Client.exists().where(Client.name == "No token")


# --- record-level visibility ------------------------------------------------------------


@pytest.fixture
async def office(db: None, app: Any) -> dict[str, Any]:
    """Two teams: north (head Helen, manager Ann) and south (manager Bob); plus a reader."""
    from core.services import clients, deals, tasks
    from core.tables import Team

    await deals.ensure_default_pipeline()

    north = (await Team.insert(Team(name="North")).returning(Team.id))[0]["id"]
    south = (await Team.insert(Team(name="South")).returning(Team.id))[0]["id"]
    people = {
        "helen": await _user("helen", "head", north),
        "ann": await _user("ann", "manager", north),
        "bob": await _user("bob", "manager", south),
        "rita": await _user("rita", "readonly"),
        "root": await _user("root", "admin"),
    }
    records: dict[str, Any] = {"people": people}
    for name in ("helen", "ann", "bob"):
        uid = people[name]["id"]
        client_id = await clients.create_client(
            {
                "name": f"Client of {name}",
                "responsible": uid,
                "phones": f"+7 495 100-00-0{uid % 10}",
                "emails": f"{name}@client.example",
            },
            uid,
        )
        deal_id = await deals.create_deal(
            {"title": f"Deal of {name}", "client": client_id, "amount": "1000"}, uid
        )
        task_id = await tasks.create_task(
            {"title": f"Task of {name}", "due_at": "2030-01-01 10:00", "client": client_id}, uid
        )
        records[name] = {"client": client_id, "deal": deal_id, "task": task_id, "owner": uid}
    return records


def _names(text: str, kind: str) -> set[str]:
    return set(re.findall(kind + r" of (helen|ann|bob)", text))


async def test_managers_see_only_their_own_clients(office: dict[str, Any], client: Any) -> None:
    ann = await _as(client, "ann")
    assert _names((await ann.get("/clients")).text, "Client") == {"ann"}
    assert _names((await ann.get("/deals/list")).text, "Deal") == {"ann"}
    board = await ann.get("/deals")
    assert _names(board.text, "Deal") == {"ann"}
    for found in ("Client of bob", "bob@client.example", "+7 495 100"):
        page = await ann.get("/clients", params={"q": found})
        assert f'/clients/{office["bob"]["client"]}"' not in page.text, f"search {found!r} leaks"
    api = (await ann.get("/api/v1/clients", params={"q": "Client"})).json()
    assert [item["name"] for item in api["items"]] == ["Client of ann"]


@pytest.mark.parametrize(
    ("url", "method"),
    [
        ("/clients/{client}", "GET"),
        ("/clients/{client}/edit", "GET"),
        ("/clients/{client}/timeline", "GET"),
        ("/clients/{client}/contacts", "GET"),
        ("/clients/{client}", "POST"),
        ("/clients/{client}/notes", "POST"),
        ("/deals/{deal}", "GET"),
        ("/deals/{deal}/edit", "POST"),
        ("/deals/{deal}/move", "POST"),
        ("/tasks/{task}", "GET"),
        ("/tasks/{task}/complete", "POST"),
        ("/api/v1/clients/{client}", "GET"),
        ("/api/v1/deals/{deal}", "GET"),
        ("/api/v1/tasks/{task}", "GET"),
        ("/p/sample/clients/{client}/tab", "GET"),
    ],
)
async def test_guessing_another_managers_ids_gives_404(
    office: dict[str, Any], client: Any, url: str, method: str
) -> None:
    from core.tables import Client, Task

    ann = await _as(client, "ann")
    target = url.format(**office["bob"])
    if method == "GET":
        response = await ann.get(target, headers={"accept": "text/html"})
    else:
        response = await post(ann, target, {"name": "Hijacked", "text": "x", "stage": "1"})
    assert response.status_code == 404, f"{method} {target}"
    assert not await Client.exists().where(Client.name == "Hijacked")
    assert await Task.exists().where((Task.id == office["bob"]["task"]) & Task.done_at.is_null()), (
        "nothing changed"
    )


async def test_cannot_attach_records_to_an_invisible_client(
    office: dict[str, Any], client: Any
) -> None:
    ann = await _as(client, "ann")
    deal = await post(ann, "/deals", {"title": "Sneaky", "client": office["bob"]["client"]})
    assert deal.status_code == 422
    task = await post(
        ann,
        "/tasks",
        {"title": "Sneaky", "due_at": "2030-01-01 10:00", "client": office["bob"]["client"]},
    )
    assert task.status_code == 422


async def test_team_head_sees_the_team_and_reader_sees_all(
    office: dict[str, Any], client: Any
) -> None:
    helen = await _as(client, "helen")
    assert _names((await helen.get("/clients")).text, "Client") == {"helen", "ann"}
    assert _names((await helen.get("/deals/list")).text, "Deal") == {"helen", "ann"}
    assert (await helen.get(f"/clients/{office['bob']['client']}")).status_code == 404
    assert (await helen.get(f"/tasks/{office['ann']['task']}")).status_code == 200
    rita = await _as(client, "rita")
    assert _names((await rita.get("/clients")).text, "Client") == {"helen", "ann", "bob"}
    card = await rita.get(f"/clients/{office['bob']['client']}")
    assert card.status_code == 200
    change = await post(rita, f"/clients/{office['bob']['client']}", {"name": "Renamed"})
    assert change.status_code == 403, "read-only sees but cannot change"


@pytest.mark.parametrize("record_type", ["client", "deal", "task"])
@pytest.mark.parametrize(("scope", "visible"), [("own", {"ann"}), ("team", {"ann", "helen"})])
async def test_scope_matrix(
    office: dict[str, Any], client: Any, record_type: str, scope: str, visible: set[str]
) -> None:
    """The manager role's scope per record type decides what Ann sees of each type."""
    from core.services import roles

    role = await roles.get_role("manager")
    form = {"name": role["name"], "permissions": role["permissions"]}
    form.update({f"scope:{code}": value for code, value in role["scopes"].items()})
    form[f"scope:{record_type}"] = scope
    await roles.update_role("manager", form)
    ann = await _as(client, "ann")
    seen = set()
    for owner in ("helen", "ann", "bob"):
        url = {"client": "/clients/{}", "deal": "/deals/{}", "task": "/tasks/{}"}[record_type]
        status = (await ann.get(url.format(office[owner][record_type]))).status_code
        assert status in (200, 404)
        if status == 200:
            seen.add(owner)
    assert seen == visible


async def test_plugin_records_follow_the_core_scope(office: dict[str, Any], client: Any) -> None:
    """The sample plugin filters its marks with access.client_filter: no rules of its own."""
    from core.services import roles
    from tests.plugins.sample.tables import SampleMark

    for owner in ("ann", "bob"):
        await SampleMark.insert(SampleMark(client=office[owner]["client"], label=f"mark-{owner}"))
    role = await roles.get_role("readonly")
    form = {"name": role["name"], "permissions": role["permissions"]}
    form.update({f"scope:{code}": value for code, value in role["scopes"].items()})
    form["scope:sample.mark"] = "own"
    await roles.update_role("readonly", form)
    rita = await _as(client, "rita")
    tab = await rita.get(f"/p/sample/clients/{office['bob']['client']}/tab")
    assert tab.status_code == 200, "Rita sees the client (scope all)..."
    assert "mark-bob" not in tab.text, "...but not marks, whose scope is own"
    ann = await _as(client, "ann")
    assert "mark-ann" in (await ann.get(f"/p/sample/clients/{office['ann']['client']}/tab")).text


# --- hidden fields ----------------------------------------------------------------------


async def _hide(role_code: str, *fields: str) -> None:
    from core.services import roles

    role = await roles.get_role(role_code)
    form = {"name": role["name"], "permissions": role["permissions"], "hidden_fields": list(fields)}
    form.update({f"scope:{code}": value for code, value in role["scopes"].items()})
    await roles.update_role(role_code, form)


async def test_hidden_fields_are_not_shown_nor_lost(office: dict[str, Any], client: Any) -> None:
    from core.services import clients, deals

    await _hide("manager", "client.phones", "deal.amount")
    ann = await _as(client, "ann")
    ids = office["ann"]
    card = await ann.get(f"/clients/{ids['client']}")
    assert "☎" not in card.text and "ann@client.example" in card.text
    listing = await ann.get("/clients")
    assert "+7 495" not in listing.text
    api = (await ann.get(f"/api/v1/clients/{ids['client']}")).json()
    assert api["phones"] is None and api["emails"] == ["ann@client.example"]
    deal_page = await ann.get(f"/deals/{ids['deal']}")
    assert "1,000" not in deal_page.text and "•••" in deal_page.text
    assert (await ann.get(f"/api/v1/deals/{ids['deal']}")).json()["amount_minor"] is None
    # Editing without seeing the fields keeps them.
    saved = await post(
        ann,
        f"/clients/{ids['client']}",
        {"name": "Client of ann, renamed", "kind": "company", "responsible": ids["owner"]},
    )
    assert saved.status_code in (200, 303)
    saved = await post(ann, f"/deals/{ids['deal']}/edit", {"title": "Deal of ann, renamed"})
    assert saved.status_code in (200, 303)
    from core import access

    with access.acting_as(access.SYSTEM):
        assert (await clients.get_client(ids["client"]))["phones"]
        assert (await deals.get_deal(ids["deal"]))["amount_minor"] == 100000
    helen = await _as(client, "helen")
    assert "☎" in (await helen.get(f"/clients/{ids['client']}")).text, "other roles still see"


async def test_changes_are_audited_field_by_field(office: dict[str, Any], client: Any) -> None:
    from core.tables import AuditEntry

    ann = await _as(client, "ann")
    ids = office["ann"]
    await post(
        ann,
        f"/clients/{ids['client']}",
        {
            "name": "Client of ann",
            "kind": "company",
            "address": "Tverskaya 1",
            "responsible": ids["owner"],
            "phones": "+7 495 100-00-02",
            "emails": "ann@client.example",
        },
    )
    entry = (
        await AuditEntry.select()
        .where(
            (AuditEntry.action == "client.update") & (AuditEntry.object_id == str(ids["client"]))
        )
        .first()
    )
    assert entry is not None and entry["actor_name"] == "ann"
    changes = entry["changes"]
    changes = json.loads(changes) if isinstance(changes, str) else changes
    assert changes["address"] == ["", "Tverskaya 1"]


async def test_head_looks_at_a_team_members_tasks(office: dict[str, Any], client: Any) -> None:
    ann_id, bob_id = office["people"]["ann"]["id"], office["people"]["bob"]["id"]
    helen = await _as(client, "helen")
    page = await helen.get("/tasks", params={"view": "upcoming", "assignee": ann_id})
    assert page.status_code == 200 and "Task of ann" in page.text
    assert f'<option value="{bob_id}"' not in page.text, "only visible people are offered"
    outside = await helen.get("/tasks", params={"assignee": bob_id})
    assert outside.status_code == 404
    ann = await _as(client, "ann")
    assert (
        await ann.get("/tasks", params={"assignee": office["people"]["helen"]["id"]})
    ).status_code == 404


async def test_saving_a_role_keeps_rules_of_a_disabled_plugin(db: None) -> None:
    from core.services import roles
    from core.tables import Role

    await Role.update(
        {
            Role.permissions: ["core.clients.view", "gone.plugin_perm"],
            Role.scopes: {"client": "own", "gone.thing": "all"},
            Role.hidden_fields: ["gone.thing.secret"],
        }
    ).where(Role.code == "manager")
    await roles.update_role("manager", {"name": "Manager", "permissions": ["core.deals.view"]})
    role = await roles.get_role("manager")
    assert role["permissions"] == ["core.deals.view", "gone.plugin_perm"]
    assert role["scopes"]["gone.thing"] == "all" and role["scopes"]["client"] == "own"
    assert role["hidden_fields"] == ["gone.thing.secret"]


async def test_built_in_role_names_follow_the_readers_language(db: None) -> None:
    from core.i18n import current_locale
    from core.services import roles

    token = current_locale.set("ru")
    try:
        assert (await roles.get_role("manager"))["name"] == "Менеджер"
    finally:
        current_locale.reset(token)
    assert (await roles.get_role("manager"))["name"] == "Manager"
    await roles.update_role("manager", {"name": "Sales rep"})
    assert (await roles.get_role("manager"))["name"] == "Sales rep", "a rename sticks"
