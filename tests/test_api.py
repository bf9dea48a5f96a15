"""The JSON API: bearer auth, the same validation as the forms, CRUD, the schema."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.support import post

VALID_INN = "7707083893"


async def bearer(user: dict[str, Any]) -> dict[str, str]:
    from core.services import api_tokens

    return {"Authorization": f"Bearer {await api_tokens.create_token(user['id'], 'tests')}"}


@pytest.fixture
async def auth(manager: dict[str, Any]) -> dict[str, str]:
    return await bearer(manager)


async def test_token_required(client, manager):
    r = await client.get("/api/v1/clients")
    assert r.status_code == 401
    assert r.json()["status_code"] == 401
    r = await client.get("/api/v1/clients", headers={"Authorization": "Bearer nonsense"})
    assert r.status_code == 401
    r = await client.post("/api/v1/clients", json={"name": "X"})
    assert r.status_code == 401


async def test_session_cookie_reads_but_never_writes(as_manager):
    assert (await as_manager.get("/api/v1/clients")).status_code == 200
    r = await as_manager.post("/api/v1/clients", json={"name": "Cookie Ltd"})
    assert r.status_code == 401
    r = await post(as_manager, "/api/v1/clients", json={"name": "Cookie Ltd"})
    assert r.status_code == 401  # a CSRF header does not make a cookie enough either


async def test_create_client_validates_like_the_form(client, auth, manager):
    r = await client.post(
        "/api/v1/clients", json={"name": "Bad INN", "inn": "1234567890"}, headers=auth
    )
    assert r.status_code == 422
    body = r.json()
    assert body["detail"] == "invalid input"
    assert "inn" in body["errors"]

    r = await client.post("/api/v1/clients", json={"phones": ["nope"]}, headers=auth)
    assert r.status_code == 422
    assert set(r.json()["errors"]) >= {"name", "phones"}

    r = await client.post(
        "/api/v1/clients",
        json={
            "name": "ООО «Ромашка»",
            "inn": VALID_INN,
            "phones": ["8 (912) 345-67-89"],
            "emails": ["Info@Example.COM"],
            "tags": ["VIP"],
        },
        headers=auth,
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["id"] > 0
    assert created["phones"] == ["+79123456789"]
    assert created["emails"] == ["info@example.com"]
    assert created["tags"] == ["vip"]
    assert created["responsible"] == manager["id"]
    assert created["inn"] == VALID_INN

    r = await client.get(f"/api/v1/clients/{created['id']}", headers=auth)
    assert r.status_code == 200
    assert r.json()["name"] == "ООО «Ромашка»"


async def test_bad_json_and_unknown_ids(client, auth):
    r = await client.post(
        "/api/v1/clients",
        content=b"{not json",
        headers={**auth, "content-type": "application/json"},
    )
    assert r.status_code == 400
    r = await client.get("/api/v1/clients/999999", headers=auth)
    assert r.status_code == 404
    assert r.json()["status_code"] == 404
    r = await client.patch("/api/v1/clients/999999", json={"name": "X"}, headers=auth)
    assert r.status_code == 404


async def test_list_pagination_with_cursor(client, auth):
    for i in range(5):
        r = await client.post("/api/v1/clients", json={"name": f"Client {i}"}, headers=auth)
        assert r.status_code == 201
    names: list[str] = []
    cursor = ""
    pages = 0
    while True:
        r = await client.get("/api/v1/clients", params={"limit": 2, "cursor": cursor}, headers=auth)
        assert r.status_code == 200
        page = r.json()
        names += [item["name"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert pages == 3
    assert names == [f"Client {i}" for i in range(5)]

    r = await client.get("/api/v1/clients", params={"q": "client 3"}, headers=auth)
    assert [item["name"] for item in r.json()["items"]] == ["Client 3"]


async def test_patch_put_and_delete(client, auth, admin):
    r = await client.post(
        "/api/v1/clients",
        json={"name": "Acme", "phones": ["+7 912 345 67 89"], "source": "web"},
        headers=auth,
    )
    client_id = r.json()["id"]

    r = await client.patch(f"/api/v1/clients/{client_id}", json={"notes": "hello"}, headers=auth)
    assert r.status_code == 200, r.text
    patched = r.json()
    assert patched["notes"] == "hello"
    assert patched["name"] == "Acme"
    assert patched["phones"] == ["+79123456789"]  # untouched fields are kept
    assert patched["source"] == "web"

    r = await client.patch(f"/api/v1/clients/{client_id}", json={"inn": "111"}, headers=auth)
    assert r.status_code == 422
    assert "inn" in r.json()["errors"]

    r = await client.put(f"/api/v1/clients/{client_id}", json={"name": "Acme 2"}, headers=auth)
    assert r.status_code == 200
    replaced = r.json()
    assert replaced["name"] == "Acme 2"
    assert replaced["phones"] == [] and replaced["notes"] == ""

    # managers may not delete clients (same permission as the web UI)
    r = await client.delete(f"/api/v1/clients/{client_id}", headers=auth)
    assert r.status_code == 403
    admin_auth = await bearer(admin)
    r = await client.delete(f"/api/v1/clients/{client_id}", headers=admin_auth)
    assert r.status_code == 204
    r = await client.get(f"/api/v1/clients/{client_id}", headers=auth)
    assert r.status_code == 404


async def test_contacts_crud(client, auth):
    client_id = (await client.post("/api/v1/clients", json={"name": "Acme"}, headers=auth)).json()[
        "id"
    ]
    base = f"/api/v1/clients/{client_id}/contacts"
    r = await client.post(base, json={"name": ""}, headers=auth)
    assert r.status_code == 422
    assert "name" in r.json()["errors"]

    r = await client.post(
        base,
        json={"name": "Ivan", "position": "CEO", "phones": ["89123456780"]},
        headers=auth,
    )
    assert r.status_code == 201, r.text
    contact = r.json()
    assert contact["phones"] == ["+79123456780"]
    assert contact["client"] == client_id

    r = await client.put(
        f"{base}/{contact['id']}", json={"name": "Ivan P.", "emails": ["i@x.ru"]}, headers=auth
    )
    assert r.status_code == 200
    assert r.json()["name"] == "Ivan P."
    assert r.json()["emails"] == ["i@x.ru"] and r.json()["phones"] == []

    r = await client.get(base, headers=auth)
    assert [c["name"] for c in r.json()] == ["Ivan P."]
    r = await client.get(f"{base}/{contact['id']}", headers=auth)
    assert r.status_code == 200

    r = await client.delete(f"{base}/{contact['id']}", headers=auth)
    assert r.status_code == 204
    assert (await client.get(base, headers=auth)).json() == []
    assert (await client.get(f"{base}/{contact['id']}", headers=auth)).status_code == 404
    assert (await client.delete(f"{base}/{contact['id']}", headers=auth)).status_code == 404
    assert (await client.get("/api/v1/clients/999999/contacts", headers=auth)).status_code == 404


async def test_readonly_token_cannot_write(client, db):
    from core.services import users

    reader = await users.create_user("reader", "Rita Reader", "reader-password", role="readonly")
    headers = await bearer(reader)
    assert (await client.get("/api/v1/clients", headers=headers)).status_code == 200
    r = await client.post("/api/v1/clients", json={"name": "X"}, headers=headers)
    assert r.status_code == 403


async def test_openapi_schema_documents_the_api(client, auth):
    r = await client.get("/api/schema/openapi.json", headers=auth)
    assert r.status_code == 200
    schema = r.json()
    paths = schema["paths"]
    assert "/api/v1/clients" in paths
    assert "/api/v1/clients/{client_id}" in paths
    assert "/api/v1/clients/{client_id}/contacts" in paths
    assert "/api/v1/deals/{deal_id}/move" in paths
    assert "/api/v1/tasks/{task_id}/complete" in paths
    components = schema["components"]["schemas"]
    assert any(name.endswith("ClientIn") for name in components)
    assert any(name.endswith("ClientOut") for name in components)
    assert not any(p.startswith("/profile") or p.startswith("/files") for p in paths)


async def test_token_page_create_use_revoke(as_manager, manager):
    from core.services import api_tokens

    r = await as_manager.get("/profile/tokens")
    assert r.status_code == 200
    r = await post(as_manager, "/profile/tokens", {"name": ""})
    assert r.status_code == 422
    r = await post(as_manager, "/profile/tokens", {"name": "1C sync"})
    assert r.status_code == 200
    import re

    token = re.search(r'id="new-token-value">([^<]+)<', r.text).group(1)
    (row,) = await api_tokens.list_tokens(manager["id"])
    assert row["name"] == "1C sync"
    assert token not in (await as_manager.get("/profile/tokens")).text  # shown once

    headers = {"Authorization": f"Bearer {token}"}
    assert (await as_manager.get("/api/v1/clients", headers=headers)).status_code == 200
    r = await post(as_manager, f"/profile/tokens/{row['id']}/revoke", follow_redirects=False)
    assert r.status_code == 303
    assert await api_tokens.list_tokens(manager["id"]) == []
    as_manager.cookies.clear()
    assert (await as_manager.get("/api/v1/clients", headers=headers)).status_code == 401


async def test_token_service(manager, admin):
    from core.services import api_tokens
    from core.services.common import NotFound
    from core.tables import ApiToken

    token = await api_tokens.create_token(manager["id"], "cli")
    assert len(token) >= 40
    stored = await ApiToken.select(ApiToken.token_hash).first()
    assert stored["token_hash"] == api_tokens.hash_token(token) != token
    (row,) = await api_tokens.list_tokens(manager["id"])
    with pytest.raises(NotFound):
        await api_tokens.revoke(admin["id"], row["id"])  # not theirs
    await api_tokens.revoke(manager["id"], row["id"])
    assert await api_tokens.list_tokens(manager["id"]) == []


# --- deals and tasks (their services live in core.services.deals / tasks) -------------


async def test_deals_api(client, auth, manager):
    from core.services import deals

    pipeline_id = await deals.ensure_default_pipeline()
    stages = (await deals.get_pipeline(pipeline_id))["stages"]
    lost = next(s for s in stages if s["outcome"] == "lost")
    won = next(s for s in stages if s["outcome"] == "won")
    client_id = (await client.post("/api/v1/clients", json={"name": "Acme"}, headers=auth)).json()[
        "id"
    ]

    r = await client.post("/api/v1/deals", json={"client": client_id}, headers=auth)
    assert r.status_code == 422
    assert "title" in r.json()["errors"]
    r = await client.post(
        "/api/v1/deals",
        json={"title": "Supply", "client": client_id, "amount": "1 500,50"},
        headers=auth,
    )
    assert r.status_code == 201, r.text
    deal = r.json()
    assert deal["amount_minor"] == 150050
    assert deal["responsible"] == manager["id"]
    assert deal["stage_outcome"] == "open"

    r = await client.patch(
        f"/api/v1/deals/{deal['id']}",
        json={"amount": 99, "expected_close": "2030-01-31"},
        headers=auth,
    )
    assert r.status_code == 200, r.text
    assert r.json()["amount_minor"] == 9900
    assert r.json()["title"] == "Supply"
    assert r.json()["expected_close"] == "2030-01-31"

    r = await client.post(
        f"/api/v1/deals/{deal['id']}/move", json={"stage": lost["id"]}, headers=auth
    )
    assert r.status_code == 422
    assert "lost_reason" in r.json()["errors"]
    r = await client.post(
        f"/api/v1/deals/{deal['id']}/move", json={"stage": won["id"]}, headers=auth
    )
    assert r.status_code == 200
    assert r.json()["stage_outcome"] == "won"
    assert r.json()["closed_at"]

    r = await client.get("/api/v1/deals", params={"client": client_id}, headers=auth)
    assert [d["id"] for d in r.json()["items"]] == [deal["id"]]
    assert (await client.get("/api/v1/deals/999999", headers=auth)).status_code == 404


async def test_tasks_api(client, auth, manager):
    from core.services.common import utcnow

    due = (utcnow() + timedelta(days=3)).isoformat()
    r = await client.post("/api/v1/tasks", json={"due_at": due}, headers=auth)
    assert r.status_code == 422
    assert "title" in r.json()["errors"]
    r = await client.post("/api/v1/tasks", json={"title": "Call back", "due_at": due}, headers=auth)
    assert r.status_code == 201, r.text
    task = r.json()
    assert task["assignee"] == manager["id"]
    assert task["done_at"] is None

    r = await client.get("/api/v1/tasks", params={"view": "upcoming"}, headers=auth)
    assert [t["id"] for t in r.json()["items"]] == [task["id"]]

    r = await client.patch(
        f"/api/v1/tasks/{task['id']}", json={"title": "Call back!"}, headers=auth
    )
    assert r.status_code == 200, r.text
    assert r.json()["title"] == "Call back!"
    assert r.json()["due_at"] == task["due_at"]

    r = await client.post(f"/api/v1/tasks/{task['id']}/complete", headers=auth)
    assert r.status_code == 200
    assert r.json()["done_at"]
    r = await client.get("/api/v1/tasks", params={"view": "done"}, headers=auth)
    assert [t["id"] for t in r.json()["items"]] == [task["id"]]
    r = await client.post(f"/api/v1/tasks/{task['id']}/reopen", headers=auth)
    assert r.status_code == 200
    assert r.json()["done_at"] is None
    assert (await client.get("/api/v1/tasks/999999", headers=auth)).status_code == 404
