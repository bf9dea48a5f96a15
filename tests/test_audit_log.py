"""The audit log browser: filters, keyset pages, flagged entries, and no way to change the log."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from core.services import audit, users
from core.services.audit import AuditQuery
from core.settings import PROJECT_ROOT
from tests.support import csrf_token, post


def _actions(html: str) -> list[str]:
    return re.findall(r"<code>([^<]+)</code></a></td>", html)


def _more_url(html: str) -> str | None:
    match = re.search(r'<tr id="audit-more">.*?href="([^"]+)"', html, re.S)
    return match.group(1).replace("&amp;", "&") if match else None


async def test_only_roles_with_the_audit_permission_browse_it(
    as_manager: Any, manager: dict[str, Any]
) -> None:
    assert (await as_manager.get("/admin/audit")).status_code == 403


async def test_newest_first_in_keyset_pages(as_admin: Any, admin: dict[str, Any]) -> None:
    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    expected = []
    for i in range(120):
        # threes share a timestamp, across page ends: the id breaks the tie, so no entry
        # is lost or repeated
        at = start + timedelta(minutes=i // 3)
        await audit.record(f"test.e{i:03}", "client", i, "", actor=admin, at=at)
        expected.append(f"test.e{i:03}")
    expected.reverse()

    seen: list[str] = []
    url: str | None = "/admin/audit?action=test.*"
    pages = 0
    while url:
        response = await as_admin.get(url)
        assert response.status_code == 200, response.text
        seen += _actions(response.text)
        url = _more_url(response.text)
        pages += 1
    assert seen == expected
    assert pages == 3

    # htmx "Show older" gets only the next rows
    first = await as_admin.get("/admin/audit?action=test.*")
    more = await as_admin.get(
        _more_url(first.text) or "", headers={"hx-request": "true", "hx-target": "audit-more"}
    )
    assert "<h1>" not in more.text
    assert _actions(more.text) == expected[50:100]


async def test_filters_by_user_action_object_period_and_flag(
    as_admin: Any, admin: dict[str, Any], manager: dict[str, Any]
) -> None:
    # 22:30 UTC on 10 January is 01:30 on 11 January in Moscow (the install's time zone)
    late = datetime(2026, 1, 10, 22, 30, tzinfo=UTC)
    await audit.record("client.view", "client", 5, "", actor=manager, at=late)
    await audit.record("client.update", "client", 5, "Acme", {"name": ["Old", "New"]}, actor=admin)
    await audit.record("client.view", "client", 6, "", actor=manager)
    await audit.record("deal.update", "deal", 5, "", actor=manager)
    await audit.record("security.anomaly", "user", manager["id"], "", actor=manager, flagged=True)

    async def actions(query: str) -> list[str]:
        response = await as_admin.get("/admin/audit?" + query)
        assert response.status_code == 200, response.text
        return _actions(response.text)

    assert await actions(f"actor={manager['id']}") == [
        "security.anomaly",
        "deal.update",
        "client.view",
        "client.view",
    ]
    assert await actions("action=client.view") == ["client.view", "client.view"]
    assert await actions("action=client.*") == ["client.view", "client.update", "client.view"]
    assert await actions("object_type=client&object_id=5") == ["client.update", "client.view"]
    assert await actions("object_type=deal") == ["deal.update"]
    assert await actions("from=2026-01-11&to=2026-01-11") == ["client.view"]
    assert await actions("from=2026-01-09&to=2026-01-10") == []
    assert await actions("flagged=1") == ["security.anomaly"]

    page = await as_admin.get("/admin/audit")
    assert page.text.count('class="audit-flagged"') == 1
    # field-level changes, readable
    assert re.search(r"<dt>name</dt>\s*<dd>Old <span class=\"arrow\">→</span> New</dd>", page.text)
    # the filter's selects offer users (inactive ones too) and each action with its family
    assert f'<option value="{manager["id"]}"' in page.text
    assert '<option value="client.*"' in page.text and '<option value="deal.update"' in page.text


async def test_a_bad_period_is_shown_next_to_the_field(as_admin: Any) -> None:
    response = await as_admin.get("/admin/audit?from=2026-02-10&to=2026-02-01")
    assert response.status_code == 422
    assert 'id="error-to"' in response.text
    response = await as_admin.get("/admin/audit?from=yesterday")
    assert response.status_code == 422 and 'id="error-from"' in response.text


async def test_the_service_pages_by_cursor(db: None) -> None:
    user = await users.create_user("u", "U", "password-1")
    for _ in range(5):
        await audit.record("x", actor=user, at=datetime(2026, 1, 1, tzinfo=UTC))
    first, cursor = await audit.list_entries(AuditQuery(size=2))
    second, cursor2 = await audit.list_entries(AuditQuery(size=2, cursor=cursor or ""))
    third, cursor3 = await audit.list_entries(AuditQuery(size=2, cursor=cursor2 or ""))
    ids = [e["id"] for e in first + second + third]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 5 and cursor3 is None
    # a forged cursor is ignored, not an error
    assert len((await audit.list_entries(AuditQuery(cursor="!!")))[0]) == 5


# --- the log cannot be changed ----------------------------------------------------------


async def test_no_route_changes_the_audit_log(app: Any) -> None:
    writes = {"POST", "PUT", "PATCH", "DELETE"}
    audit_routes = [r for r in app.routes if r.path.startswith("/admin/audit")]
    assert {r.path for r in audit_routes} >= {"/admin/audit", "/admin/audit/export"}
    for route in audit_routes:
        assert not (set(route.methods) & writes), f"{route.path} accepts {route.methods}"
    api_routes = [r for r in app.routes if r.path.startswith("/api/")]
    assert api_routes, "the API is mounted"
    for route in api_routes:
        assert "audit" not in route.path.lower(), f"{route.path} exposes the audit log"
        for handler in route.route_handlers:  # type: ignore[attr-defined]
            module = handler.fn.__module__
            assert "audit" not in module, f"{route.path} is served by {module}"


async def test_writing_to_an_audit_url_is_refused(as_admin: Any, admin: dict[str, Any]) -> None:
    await audit.record("client.view", "client", 1, "", actor=admin)
    for url in ("/admin/audit", "/admin/audit/1", "/admin/audit/1/delete"):
        response = await post(as_admin, url, {"summary": "edited"})
        assert response.status_code in (404, 405), url
        response = await as_admin.delete(url, headers={"x-csrftoken": csrf_token(as_admin)})
        assert response.status_code in (404, 405), url
    rows, _cursor = await audit.list_entries(AuditQuery(action="client.view"))
    assert [r["summary"] for r in rows] == [""]


def test_no_code_updates_or_deletes_audit_entries() -> None:
    """Append-only is a property of the code: no service, job or plugin touches old rows."""
    patterns = re.compile(
        r"AuditEntry\s*\.\s*(update|delete)\b|(UPDATE|DELETE\s+FROM)\s+\"?core_audit\b", re.I
    )
    offenders = []
    for folder in ("core", "plugins"):
        for path in Path(PROJECT_ROOT, folder).rglob("*.py"):
            if "piccolo_migrations" in path.parts:
                continue
            if patterns.search(path.read_text(encoding="utf-8")):
                offenders.append(str(path.relative_to(PROJECT_ROOT)))
    assert offenders == []
