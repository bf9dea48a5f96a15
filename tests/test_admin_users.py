"""Administration of users, roles and teams, and offboarding, through HTTP as an admin."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from core.services import clients, deals, roles, tasks, users
from core.services.common import utcnow
from core.tables import ApiToken, AuditEntry, Notification, Session, Task, Team, TimelineEntry, User
from tests.support import field_error, login, post


async def _audit(action: str, object_id: Any = None) -> list[dict[str, Any]]:
    query = AuditEntry.select().where(AuditEntry.action == action)
    if object_id is not None:
        query = query.where(AuditEntry.object_id == str(object_id))
    rows = await query.order_by(AuditEntry.id)
    for row in rows:
        if isinstance(row["changes"], str):
            row["changes"] = json.loads(row["changes"])
    return rows


def _password(html: str) -> str:
    match = re.search(r'id="new-password-value">([^<]+)<', html)
    assert match, html
    return match.group(1)


async def _user(user_id: int) -> dict[str, Any]:
    row = await User.select().where(User.id == user_id).first()
    assert row is not None
    return row


@pytest.fixture
async def second_client(app: Any) -> AsyncIterator[Any]:
    """Another browser, for the user the admin acts on."""
    async with AsyncTestClient(app=app) as http:
        yield http


async def _can_log_in(app: Any, username: str, password: str) -> bool:
    async with AsyncTestClient(app=app) as http:
        await http.get("/login")
        r = await http.post(
            "/login",
            data={
                "username": username,
                "password": password,
                "_csrf_token": http.cookies.get("csrftoken", ""),
            },
            follow_redirects=False,
        )
        return r.status_code == 303


USER_FORM = {"full_name": "Bob Builder", "email": "bob@example.com", "role": "manager"}


# --- users ----------------------------------------------------------------------------


async def test_create_user_shows_the_password_once_and_requires_a_change(as_admin, app):
    team = await Team.insert(Team(name="North")).returning(Team.id)
    r = await post(
        as_admin,
        "/admin/users",
        {**USER_FORM, "username": "bob", "team": str(team[0]["id"]), "locale": "ru"},
    )
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    password = _password(r.text)
    bob = await User.select().where(User.username == "bob").first()
    assert bob["must_change_password"] is True
    assert (bob["team"], bob["role"], bob["email"], bob["locale"]) == (
        team[0]["id"],
        "manager",
        "bob@example.com",
        "ru",
    )
    entry = (await _audit("user.create", bob["id"]))[0]
    assert entry["changes"]["team"] == [None, "North"]
    assert entry["actor_name"] == "admin"
    assert password not in json.dumps(entry["changes"])
    assert await _can_log_in(app, "bob", password)
    # The password is not shown on the user's page afterwards.
    page = await as_admin.get(f"/admin/users/{bob['id']}")
    assert password not in page.text


async def test_create_user_errors_next_to_the_fields(as_admin, manager):
    r = await post(
        as_admin,
        "/admin/users",
        {"username": "manager", "full_name": "", "email": "not-mail", "role": "boss"},
    )
    assert r.status_code == 422
    assert field_error(r.text, "username") == "This user name is taken."
    assert field_error(r.text, "full_name") == "This field is required."
    assert "not a valid e-mail" in (field_error(r.text, "email") or "")
    assert field_error(r.text, "role") == "Choose one of the offered values."
    r = await post(as_admin, "/admin/users", {**USER_FORM, "username": "two words"})
    assert r.status_code == 422 and field_error(r.text, "username")
    assert await User.count() == 2


async def test_user_list_filters_active_and_inactive(as_admin, admin, manager):
    await User.update({User.active: False}).where(User.id == manager["id"])
    active = await as_admin.get("/admin/users")
    inactive = await as_admin.get("/admin/users?status=inactive")
    assert f'id="user-{manager["id"]}"' not in active.text
    assert f'id="user-{manager["id"]}"' in inactive.text
    assert f'id="user-{admin["id"]}"' not in inactive.text
    # The admin logged in (audited), the manager never did.
    admin_row = re.search(rf'<tr id="user-{admin["id"]}".*?</tr>', active.text, re.S)
    manager_row = re.search(rf'<tr id="user-{manager["id"]}".*?</tr>', inactive.text, re.S)
    assert admin_row and not re.search(r"<td>—</td>\s*</tr>", admin_row.group(0))
    assert manager_row and re.search(r"<td>—</td>\s*</tr>", manager_row.group(0))


async def test_edit_user_audits_each_changed_field(as_admin, manager):
    team = (await Team.insert(Team(name="South")).returning(Team.id))[0]["id"]
    r = await post(
        as_admin,
        f"/admin/users/{manager['id']}",
        {"full_name": "Max Renamed", "email": "", "role": "manager", "team": str(team)},
    )
    assert r.status_code == 200 and "Saved." in r.text
    row = await _user(manager["id"])
    assert (row["full_name"], row["team"]) == ("Max Renamed", team)
    entry = (await _audit("user.update", manager["id"]))[0]
    assert entry["changes"] == {
        "full_name": ["Max Manager", "Max Renamed"],
        "team": [None, "South"],
    }
    assert await _audit("user.role_changed") == []

    r = await post(
        as_admin,
        f"/admin/users/{manager['id']}",
        {"full_name": "Max Renamed", "role": "head", "team": str(team)},
    )
    assert r.status_code == 200
    assert (await _user(manager["id"]))["role"] == "head"
    changed = await _audit("user.role_changed", manager["id"])
    assert [e["changes"] for e in changed] == [{"role": ["manager", "head"]}]
    assert (await _audit("user.update", manager["id"]))[-1]["changes"] == {
        "role": ["manager", "head"]
    }


async def test_edit_user_invalid_input_is_422_and_changes_nothing(as_admin, manager):
    r = await post(
        as_admin,
        f"/admin/users/{manager['id']}",
        {"full_name": "", "role": "manager", "team": "999"},
    )
    assert r.status_code == 422
    assert field_error(r.text, "full_name") == "This field is required."
    assert field_error(r.text, "team") == "Choose one of the offered values."
    assert (await _user(manager["id"]))["full_name"] == "Max Manager"
    assert await _audit("user.update") == []


async def test_password_reset_logs_out_and_issues_a_temporary_password(
    as_admin, manager, second_client, app
):
    await login(second_client, "manager", "manager-password")
    assert (await second_client.get("/clients", follow_redirects=False)).status_code == 200

    r = await post(as_admin, f"/admin/users/{manager['id']}/password")
    assert r.status_code == 200
    temporary = _password(r.text)

    r = await second_client.get("/clients", follow_redirects=False)
    assert r.status_code in (302, 303) and r.headers["location"].startswith("/login")
    assert not await _can_log_in(app, "manager", "manager-password")
    assert await _can_log_in(app, "manager", temporary)
    assert (await _user(manager["id"]))["must_change_password"] is True
    entry = (await _audit("user.password_reset", manager["id"]))[0]
    assert entry["changes"]["sessions"][0] == 1


async def test_reset_second_factor(as_admin, manager):
    await User.update({User.totp_secret: "JBSWY3DPEHPK3PXP"}).where(User.id == manager["id"])
    page = await as_admin.get(f"/admin/users/{manager['id']}")
    assert "Reset second factor" in page.text
    r = await post(as_admin, f"/admin/users/{manager['id']}/totp-reset")
    assert r.status_code == 200
    assert (await _user(manager["id"]))["totp_secret"] == ""
    assert len(await _audit("user.totp_reset", manager["id"])) == 1
    assert "Reset second factor" not in r.text


# --- offboarding ----------------------------------------------------------------------


async def _holdings_of(owner: dict[str, Any]) -> dict[str, Any]:
    """Two clients, a deal, two open tasks and a done one, all the owner's."""
    first = await clients.create_client({"name": "Romashka", "responsible": owner["id"]}, None)
    second = await clients.create_client({"name": "Vasilek", "responsible": owner["id"]}, None)
    deal = await deals.create_deal(
        {"title": "Supply", "client": first, "responsible": owner["id"]}, None
    )
    due = (utcnow() + timedelta(days=1)).isoformat()
    open_ids = [
        await tasks.create_task(
            {"title": f"Call {n}", "due_at": due, "assignee": owner["id"], "client": first},
            None,
        )
        for n in (1, 2)
    ]
    done = await tasks.create_task({"title": "Done", "due_at": due, "assignee": owner["id"]}, None)
    await tasks.complete_task(done, owner["id"])
    return {"clients": [first, second], "deal": deal, "open": open_ids, "done": done}


async def test_offboarding_hands_everything_over_and_logs_the_user_out(
    as_admin, admin, manager, second_client
):
    from core.services import api_tokens
    from core.tables import Client, Deal

    await deals.ensure_default_pipeline()
    bob = await users.create_user("bob", "Bob Builder", "bob-password", role="manager")
    owned = await _holdings_of(manager)
    token = await api_tokens.create_token(manager["id"], "script")
    await login(second_client, "manager", "manager-password")
    assert (await second_client.get("/clients", follow_redirects=False)).status_code == 200

    form = await as_admin.get(f"/admin/users/{manager['id']}/deactivate")
    assert form.status_code == 200
    assert re.search(r'id="holding-clients">2<', form.text)
    assert re.search(r'id="holding-deals">1<', form.text)
    assert re.search(r'id="holding-tasks">2<', form.text)
    assert f'<option value="{bob["id"]}"' in form.text
    assert f'<option value="{manager["id"]}"' not in form.text

    audit_before = await AuditEntry.count()
    timeline_before = await TimelineEntry.count()
    r = await post(
        as_admin, f"/admin/users/{manager['id']}/deactivate", {"receiver": str(bob["id"])}
    )
    assert r.status_code == 200 and "deactivated" in r.text

    assert (await _user(manager["id"]))["active"] is False
    moved = await Client.select(Client.responsible).where(Client.id.is_in(owned["clients"]))
    assert {row["responsible"] for row in moved} == {bob["id"]}
    assert (await Deal.select(Deal.responsible).where(Deal.id == owned["deal"]).first())[
        "responsible"
    ] == bob["id"]
    open_tasks = await Task.select(Task.assignee).where(Task.id.is_in(owned["open"]))
    assert {row["assignee"] for row in open_tasks} == {bob["id"]}
    done = await Task.select(Task.assignee).where(Task.id == owned["done"]).first()
    assert done["assignee"] == manager["id"]

    # One audit entry, nothing on the timelines.
    assert await AuditEntry.count() == audit_before + 1
    assert await TimelineEntry.count() == timeline_before
    entry = (await _audit("user.deactivated", manager["id"]))[0]
    assert entry["actor_name"] == "admin"
    assert entry["summary"] == "Max Manager (manager) → Bob Builder (bob)"
    assert entry["changes"]["receiver"] == [None, bob["id"]]
    assert entry["changes"]["clients"] == [2, 0]
    assert entry["changes"]["deals"] == [1, 0]
    assert entry["changes"]["tasks"] == [2, 0]
    assert entry["changes"]["api_tokens"] == [1, 0]
    assert entry["changes"]["sessions"] == [1, 0]

    notes = await Notification.select().where(Notification.user == bob["id"])
    assert len(notes) == 1
    assert "Max Manager" in notes[0]["text"] and "clients: 2" in notes[0]["text"]

    # Logged out at once, API token gone, cannot log in again.
    r = await second_client.get("/clients", follow_redirects=False)
    assert r.status_code in (302, 303) and r.headers["location"].startswith("/login")
    assert await Session.count().where(Session.user == manager["id"]) == 0
    assert await ApiToken.count().where(ApiToken.user == manager["id"]) == 0
    api = await second_client.get("/api/v1/clients", headers={"Authorization": f"Bearer {token}"})
    assert api.status_code == 401

    # Reactivation lets them in again, audited.
    r = await post(as_admin, f"/admin/users/{manager['id']}/reactivate")
    assert r.status_code == 200
    assert (await _user(manager["id"]))["active"] is True
    assert len(await _audit("user.reactivated", manager["id"])) == 1
    await login(second_client, "manager", "manager-password")


async def test_offboarding_to_nobody_keeps_the_records(as_admin, admin, manager):
    from core.tables import Client

    await deals.ensure_default_pipeline()
    owned = await _holdings_of(manager)
    r = await post(as_admin, f"/admin/users/{manager['id']}/deactivate", {"receiver": ""})
    assert r.status_code == 200
    assert (await _user(manager["id"]))["active"] is False
    kept = await Client.select(Client.responsible).where(Client.id.is_in(owned["clients"]))
    assert {row["responsible"] for row in kept} == {manager["id"]}
    entry = (await _audit("user.deactivated", manager["id"]))[0]
    assert entry["changes"]["clients"] == [2, 2]
    assert "receiver" not in entry["changes"]
    assert await Notification.count() == 0


async def test_offboarding_refuses_a_bad_receiver(as_admin, manager):
    other = await users.create_user("gone", "Gone Away", "gone-password")
    await User.update({User.active: False}).where(User.id == other["id"])
    for receiver in (str(other["id"]), str(manager["id"]), "x"):
        r = await post(as_admin, f"/admin/users/{manager['id']}/deactivate", {"receiver": receiver})
        assert r.status_code == 422
        assert field_error(r.text, "receiver")
    assert (await _user(manager["id"]))["active"] is True


async def test_admin_cannot_deactivate_themself_or_demote_the_last_admin(as_admin, admin):
    page = await as_admin.get(f"/admin/users/{admin['id']}/deactivate")
    assert field_error(page.text, "user") == "You cannot deactivate yourself."
    r = await post(as_admin, f"/admin/users/{admin['id']}/deactivate", {"receiver": ""})
    assert r.status_code == 422
    assert field_error(r.text, "user") == "You cannot deactivate yourself."
    assert (await _user(admin["id"]))["active"] is True

    demote = {"full_name": "Anna Admin", "role": "manager"}
    r = await post(as_admin, f"/admin/users/{admin['id']}", demote)
    assert r.status_code == 422
    assert "last active administrator" in (field_error(r.text, "role") or "")
    assert (await _user(admin["id"]))["role"] == "admin"

    # With a second active admin the first one may step down.
    await users.create_user("admin2", "Second Admin", "admin2-password", role="admin")
    r = await post(as_admin, f"/admin/users/{admin['id']}", demote, follow_redirects=False)
    assert r.status_code == 303
    assert (await _user(admin["id"]))["role"] == "manager"


async def test_last_admin_cannot_be_deactivated_by_a_custom_role_with_the_users_permission(
    client, admin, db
):
    """A custom role with the users permission still cannot switch off the last admin."""
    await roles.create_role("hr", {"name": "HR", "permissions": ["core.users"]})
    await users.create_user("hr", "Helga HR", "hr-password", role="hr")
    await login(client, "hr", "hr-password")
    r = await post(client, f"/admin/users/{admin['id']}/deactivate", {"receiver": ""})
    assert r.status_code == 422
    assert "last active administrator" in (field_error(r.text, "user") or "")
    assert (await _user(admin["id"]))["active"] is True


async def test_manager_gets_403_on_admin_pages(as_manager, manager):
    for url in (
        "/admin/users",
        "/admin/users/new",
        f"/admin/users/{manager['id']}",
        f"/admin/users/{manager['id']}/deactivate",
        "/admin/roles",
        "/admin/roles/manager",
        "/admin/teams",
    ):
        assert (await as_manager.get(url)).status_code == 403, url
    for url in (
        "/admin/users",
        f"/admin/users/{manager['id']}/password",
        "/admin/roles/manager",
        "/admin/roles/manager/delete",
        "/admin/teams",
    ):
        r = await post(as_manager, url, {"name": "x", "full_name": "x", "role": "admin"})
        assert r.status_code == 403, url
    assert (await _user(manager["id"]))["role"] == "manager"


# --- roles ----------------------------------------------------------------------------


async def test_role_list_shows_builtin_first_with_user_counts(as_admin, manager):
    await roles.create_role("auditor", {"name": "Auditor"})
    r = await as_admin.get("/admin/roles")
    order = re.findall(r'<tr id="role-(\w+)"', r.text)
    assert order[-1] == "auditor" and set(order[:4]) == {"admin", "head", "manager", "readonly"}
    assert re.search(r'id="role-manager">.*?<td>1</td>', r.text, re.S)


async def test_role_editor_saves_permissions_scopes_hidden_fields_and_limits(as_admin):
    page = await as_admin.get("/admin/roles/manager")
    assert 'name="permissions" value="core.clients.view" checked' in page.text
    assert 'value="sample.admin"' in page.text  # the sample plugin's permission
    assert 'name="hidden_fields" value="deal.amount"' in page.text
    r = await post(
        as_admin,
        "/admin/roles/manager",
        {
            "name": "Sales manager",
            "permissions": ["core.clients.view", "core.deals.view", "sample.admin"],
            "scope:client": "team",
            "scope:deal": "all",
            "scope:task": "own",
            "scope:sample.mark": "own",
            "hidden_fields": ["client.phones", "deal.amount"],
            "totp_required": "1",
            "export_max_rows": "100",
            "export_daily_rows": "",
        },
    )
    assert r.status_code == 200 and "Saved." in r.text
    role = await roles.get_role("manager")
    assert role["name"] == "Sales manager"
    assert role["permissions"] == ["core.clients.view", "core.deals.view", "sample.admin"]
    assert role["scopes"]["client"] == "team" and role["scopes"]["deal"] == "all"
    assert role["hidden_fields"] == ["client.phones", "deal.amount"]
    assert role["totp_required"] is True
    assert (role["export_max_rows"], role["export_daily_rows"]) == (100, None)
    assert len(await _audit("role.update", "manager")) == 1
    page = await as_admin.get("/admin/roles/manager")
    assert 'name="hidden_fields" value="client.phones" checked' in page.text
    assert re.search(r'<option value="team" selected>', page.text)


async def test_role_editor_shows_errors_next_to_fields(as_admin):
    before = await roles.get_role("manager")
    r = await post(
        as_admin,
        "/admin/roles/manager",
        {
            "name": "",
            "permissions": ["core.clients.view", "nope.nothing"],
            "scope:client": "everyone",
            "hidden_fields": "client.soul",
            "export_max_rows": "-5",
            "export_daily_rows": "many",
        },
    )
    assert r.status_code == 422
    assert field_error(r.text, "name") == "This field is required."
    assert field_error(r.text, "permissions") == "Unknown permission: nope.nothing"
    assert field_error(r.text, "scope:client") == "Choose one of the offered values."
    assert field_error(r.text, "hidden_fields") == "Choose one of the offered values."
    assert field_error(r.text, "export_max_rows") == "Must be at least 0."
    assert field_error(r.text, "export_daily_rows") == "Enter a whole number."
    assert await roles.get_role("manager") == before


async def test_admin_role_shows_a_note_and_keeps_every_permission(as_admin):
    page = await as_admin.get("/admin/roles/admin")
    assert 'id="admin-note"' in page.text
    assert 'name="permissions"' not in page.text
    assert 'name="hidden_fields"' not in page.text
    r = await post(
        as_admin,
        "/admin/roles/admin",
        {
            "name": "Owner",
            "permissions": [],
            "hidden_fields": ["deal.amount"],
            "totp_required": "1",
        },
    )
    assert r.status_code == 200
    role = await roles.get_role("admin")
    assert role["name"] == "Owner" and role["totp_required"] is True
    assert "core.users" in role["permissions"] and "sample.admin" in role["permissions"]
    assert role["hidden_fields"] == []
    assert set(role["scopes"].values()) == {"all"}


async def test_create_and_delete_roles(as_admin, manager):
    r = await post(as_admin, "/admin/roles", {"code": "Bad Code", "name": "X"})
    assert r.status_code == 422 and field_error(r.text, "code")
    r = await post(as_admin, "/admin/roles", {"code": "auditor", "name": "Auditor"})
    assert r.status_code == 200 and 'action="/admin/roles/auditor"' in r.text
    assert (await roles.get_role("auditor"))["permissions"] == []

    r = await post(as_admin, "/admin/roles/manager/delete")
    assert r.status_code == 422
    assert field_error(r.text, "role-manager") == "Built-in roles cannot be deleted."
    assert "manager" in await roles.role_codes()

    await User.update({User.role: "auditor"}).where(User.id == manager["id"])
    r = await post(as_admin, "/admin/roles/auditor/delete")
    assert r.status_code == 422 and field_error(r.text, "role-auditor")
    await User.update({User.role: "manager"}).where(User.id == manager["id"])
    r = await post(as_admin, "/admin/roles/auditor/delete")
    assert r.status_code == 200
    assert "auditor" not in await roles.role_codes()
    assert len(await _audit("role.delete", "auditor")) == 1


# --- teams ----------------------------------------------------------------------------


async def test_teams_create_rename_membership_and_delete(as_admin, manager):
    r = await post(as_admin, "/admin/teams", {"name": "North"})
    assert r.status_code == 200
    team = await Team.select().where(Team.name == "North").first()
    r = await post(as_admin, "/admin/teams", {"name": "North"})
    assert r.status_code == 422 and field_error(r.text, "name") == "A team with this name exists."

    r = await post(as_admin, f"/admin/teams/{team['id']}/rename", {"name": "North-West"})
    assert r.status_code == 200
    assert (await Team.select().where(Team.id == team["id"]).first())["name"] == "North-West"

    await post(
        as_admin,
        f"/admin/users/{manager['id']}",
        {"full_name": "Max Manager", "role": "manager", "team": str(team["id"])},
    )
    page = await as_admin.get("/admin/teams")
    assert f'href="/admin/users/{manager["id"]}">Max Manager' in page.text

    r = await post(as_admin, f"/admin/teams/{team['id']}/delete")
    assert r.status_code == 422 and "active members" in (field_error(r.text, "team") or "")
    await User.update({User.active: False}).where(User.id == manager["id"])
    r = await post(as_admin, f"/admin/teams/{team['id']}/delete")
    assert r.status_code == 200
    assert await Team.count() == 0
    assert (await _user(manager["id"]))["team"] is None
    actions = [
        e["action"] for e in await AuditEntry.select().where(AuditEntry.object_type == "team")
    ]
    assert actions == ["team.create", "team.rename", "team.delete"]
