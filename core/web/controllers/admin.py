"""Administration of users, roles and teams, and offboarding.

Every page needs the "manage users" permission. Generated passwords are shown in the
answer to the POST that made them, once, and never stored or shown again.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Template

from core import access
from core.access import needs
from core.default_hooks import USERS
from core.i18n import LANGUAGE_NAMES, _
from core.runtime import get_runtime
from core.services import roles, teams, user_admin
from core.validation import ValidationError
from core.web.controllers.base import current_user, form_data, redirect, render

# --- users ----------------------------------------------------------------------------


@get("/admin/users", opt=needs(USERS))
async def user_list(request: Request, status: FromQuery[str] = "active") -> Template:
    status = status if status in user_admin.STATUSES else "active"
    return render(
        request,
        "core/admin/users.html",
        rows=await user_admin.list_users(status),
        status=status,
    )


async def _user_form(
    request: Request,
    values: dict[str, Any],
    errors: dict[str, str] | None = None,
    status_code: int = 200,
    subject: dict[str, Any] | None = None,
    done: str = "",
) -> Template:
    """The create form (no ``subject``) or the edit form with the account's actions."""
    return render(
        request,
        "core/admin/user_form.html",
        status_code=status_code,
        values=values,
        errors=errors or {},
        subject=subject,
        done=done,
        roles=await roles.list_roles(),
        teams=await teams.list_teams(),
        locales=[("", _("Install default"))]
        + [(code, LANGUAGE_NAMES.get(code, code)) for code in get_runtime().settings.languages],
    )


def _shown_once(request: Request, subject: dict[str, Any], password: str, created: bool) -> Any:
    response = render(
        request,
        "core/admin/user_password.html",
        subject=subject,
        password=password,
        created=created,
    )
    response.set_header("Cache-Control", "no-store")
    return response


@get("/admin/users/new", opt=needs(USERS))
async def user_new(request: Request) -> Template:
    return await _user_form(request, {"role": "manager"})


@post("/admin/users", opt=needs(USERS), status_code=200)
async def user_create(request: Request) -> Template:
    data = await form_data(request)
    try:
        user_id, password = await user_admin.create_user(data)
    except ValidationError as exc:
        return await _user_form(request, data, exc.errors, status_code=422)
    return _shown_once(request, await user_admin.get_user(user_id), password, created=True)


@get("/admin/users/{user_id:int}", opt=needs(USERS))
async def user_edit(
    request: Request, user_id: FromPath[int], done: FromQuery[str] = ""
) -> Template:
    subject = await user_admin.get_user(user_id)
    return await _user_form(request, subject, subject=subject, done=done)


@post("/admin/users/{user_id:int}", opt=needs(USERS), status_code=200)
async def user_update(request: Request, user_id: FromPath[int]) -> Response[Any]:
    subject = await user_admin.get_user(user_id)
    data = await form_data(request)
    try:
        await user_admin.update_user(user_id, data)
    except ValidationError as exc:
        return await _user_form(
            request, {**data, "id": user_id}, exc.errors, status_code=422, subject=subject
        )
    return redirect(request, f"/admin/users/{user_id}?done=saved")


@post("/admin/users/{user_id:int}/password", opt=needs(USERS), status_code=200)
async def user_password_reset(request: Request, user_id: FromPath[int]) -> Template:
    password = await user_admin.reset_password(user_id)
    return _shown_once(request, await user_admin.get_user(user_id), password, created=False)


@post("/admin/users/{user_id:int}/totp-reset", opt=needs(USERS), status_code=200)
async def user_totp_reset(request: Request, user_id: FromPath[int]) -> Response[Any]:
    await user_admin.reset_second_factor(user_id)
    return redirect(request, f"/admin/users/{user_id}?done=totp")


async def _deactivate_page(
    request: Request,
    user_id: int,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Template:
    return render(
        request,
        "core/admin/user_deactivate.html",
        status_code=status_code,
        subject=await user_admin.get_user(user_id),
        holdings=await user_admin.holdings(user_id),
        receivers=await user_admin.active_users(exclude=user_id),
        values=values or {},
        errors=errors or {},
        is_self=current_user(request)["id"] == user_id,
    )


@get("/admin/users/{user_id:int}/deactivate", opt=needs(USERS))
async def user_deactivate_form(request: Request, user_id: FromPath[int]) -> Template:
    return await _deactivate_page(request, user_id)


@post("/admin/users/{user_id:int}/deactivate", opt=needs(USERS), status_code=200)
async def user_deactivate(request: Request, user_id: FromPath[int]) -> Response[Any]:
    data = await form_data(request)
    try:
        await user_admin.deactivate(user_id, data)
    except ValidationError as exc:
        return await _deactivate_page(request, user_id, data, exc.errors, status_code=422)
    return redirect(request, f"/admin/users/{user_id}?done=deactivated")


@post("/admin/users/{user_id:int}/reactivate", opt=needs(USERS), status_code=200)
async def user_reactivate(request: Request, user_id: FromPath[int]) -> Response[Any]:
    await user_admin.reactivate(user_id)
    return redirect(request, f"/admin/users/{user_id}?done=reactivated")


# --- roles ----------------------------------------------------------------------------


async def _roles_page(
    request: Request,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Template:
    return render(
        request,
        "core/admin/roles.html",
        status_code=status_code,
        rows=await roles.list_roles(),
        values=values or {},
        errors=errors or {},
    )


def _as_list(value: Any) -> list[str]:
    if value in (None, ""):
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _permission_groups() -> list[tuple[str, list[Any]]]:
    """Permissions by prefix: the core's first, then each plugin's."""
    groups: dict[str, list[Any]] = {}
    for permission in access.registered_permissions().values():
        groups.setdefault(permission.code.split(".", 1)[0], []).append(permission)
    order = sorted(groups, key=lambda prefix: (prefix != "core", prefix))
    return [(_("Core") if prefix == "core" else prefix, groups[prefix]) for prefix in order]


def _record_types() -> list[Any]:
    """The core's record types first (their codes have no plugin prefix), then plugins'."""
    return sorted(access.registered_record_types().values(), key=lambda r: "." in r.code)


def _role_values(role: dict[str, Any]) -> dict[str, Any]:
    """A stored role in the shape the form submits."""
    values = {
        "name": role["name"],
        "permissions": list(role["permissions"]),
        "hidden_fields": list(role["hidden_fields"]),
        "totp_required": bool(role["totp_required"]),
        "export_max_rows": role["export_max_rows"],
        "export_daily_rows": role["export_daily_rows"],
    }
    values.update({f"scope:{code}": scope for code, scope in role["scopes"].items()})
    return values


def _submitted(data: dict[str, Any], role: dict[str, Any]) -> dict[str, Any]:
    """The form as posted; for the admin role its fixed rules instead of checkboxes."""
    data = {
        **data,
        "permissions": _as_list(data.get("permissions")),
        "hidden_fields": _as_list(data.get("hidden_fields")),
    }
    if role["code"] == access.ADMIN:
        data["permissions"] = sorted(access.registered_permissions())
        data["hidden_fields"] = []
        data.update({f"scope:{code}": "all" for code in access.registered_record_types()})
    return data


async def _role_form(
    request: Request,
    role: dict[str, Any],
    values: dict[str, Any],
    errors: dict[str, str] | None = None,
    status_code: int = 200,
    done: str = "",
) -> Template:
    return render(
        request,
        "core/admin/role_form.html",
        status_code=status_code,
        role=role,
        values=values,
        errors=errors or {},
        done=done,
        permission_groups=_permission_groups(),
        record_types=_record_types(),
        scopes=[("own", _("Own records")), ("team", _("Their team's")), ("all", _("All"))],
    )


@get("/admin/roles", opt=needs(USERS))
async def role_list(request: Request) -> Template:
    return await _roles_page(request)


@post("/admin/roles", opt=needs(USERS), status_code=200)
async def role_create(request: Request) -> Response[Any]:
    data = await form_data(request)
    try:
        code = await roles.create_role(str(data.get("code", "")), {"name": data.get("name", "")})
    except ValidationError as exc:
        return await _roles_page(request, data, exc.errors, status_code=422)
    return redirect(request, f"/admin/roles/{code}")


@get("/admin/roles/{code:str}", opt=needs(USERS))
async def role_edit(request: Request, code: FromPath[str], done: FromQuery[str] = "") -> Template:
    role = await roles.get_role(code)
    return await _role_form(request, role, _role_values(role), done=done)


@post("/admin/roles/{code:str}", opt=needs(USERS), status_code=200)
async def role_update(request: Request, code: FromPath[str]) -> Response[Any]:
    role = await roles.get_role(code)
    data = _submitted(await form_data(request), role)
    try:
        await roles.update_role(code, data)
    except ValidationError as exc:
        return await _role_form(request, role, data, exc.errors, status_code=422)
    return redirect(request, f"/admin/roles/{code}?done=saved")


@post("/admin/roles/{code:str}/delete", opt=needs(USERS), status_code=200)
async def role_delete(request: Request, code: FromPath[str]) -> Response[Any]:
    try:
        await roles.delete_role(code)
    except ValidationError as exc:
        errors = {f"role-{code}": message for message in exc.errors.values()}
        return await _roles_page(request, errors=errors, status_code=422)
    return redirect(request, "/admin/roles")


# --- teams ----------------------------------------------------------------------------


async def _teams_page(
    request: Request, errors: dict[str, dict[str, str]] | None = None, status_code: int = 200
) -> Template:
    return render(
        request,
        "core/admin/teams.html",
        status_code=status_code,
        teams=await teams.list_teams(),
        errors=errors or {},
    )


async def _team_action(request: Request, scope: str, action: Any) -> Response[Any]:
    """Run one team change; its errors are shown next to the form it came from."""
    try:
        await action()
    except ValidationError as exc:
        return await _teams_page(request, {scope: exc.errors}, status_code=422)
    return redirect(request, "/admin/teams")


@get("/admin/teams", opt=needs(USERS))
async def team_list(request: Request) -> Template:
    return await _teams_page(request)


@post("/admin/teams", opt=needs(USERS), status_code=200)
async def team_create(request: Request) -> Response[Any]:
    name = str((await form_data(request)).get("name", ""))
    return await _team_action(request, "new-team", lambda: teams.create_team(name))


@post("/admin/teams/{team_id:int}/rename", opt=needs(USERS), status_code=200)
async def team_rename(request: Request, team_id: FromPath[int]) -> Response[Any]:
    name = str((await form_data(request)).get("name", ""))
    return await _team_action(request, f"team-{team_id}", lambda: teams.rename_team(team_id, name))


@post("/admin/teams/{team_id:int}/delete", opt=needs(USERS), status_code=200)
async def team_delete(request: Request, team_id: FromPath[int]) -> Response[Any]:
    return await _team_action(request, f"team-{team_id}", lambda: teams.delete_team(team_id))


HANDLERS: list[Any] = [
    user_list,
    user_new,
    user_create,
    user_edit,
    user_update,
    user_password_reset,
    user_totp_reset,
    user_deactivate_form,
    user_deactivate,
    user_reactivate,
    role_list,
    role_create,
    role_edit,
    role_update,
    role_delete,
    team_list,
    team_create,
    team_rename,
    team_delete,
]
