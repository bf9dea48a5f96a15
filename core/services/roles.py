"""Roles: the built-in four, roles an admin creates, and what each may do and see."""

from __future__ import annotations

import re
from typing import Any

from core import access
from core.db import fetch
from core.i18n import _
from core.services import audit
from core.services.common import NotFound, utcnow, write
from core.tables import Role, User
from core.validation import Form, ValidationError, integer, text

_CODE = re.compile(r"^[a-z][a-z0-9_]{1,31}$")


def _load(row: dict[str, Any]) -> dict[str, Any]:
    access.decode_role(row)
    if not row.get("name"):  # a built-in role nobody renamed: named in the reader's language
        row["name"] = str(access.BUILTIN_ROLES.get(row["code"], row["code"]))
    return row


async def sync_roles() -> list[str]:
    """Create missing built-in roles; offer new permissions and record types to roles.

    A permission or record type is offered once per role (remembered in ``seen``),
    so defaults never undo an administrator's choice. Safe to run on every start.
    """
    permissions = access.registered_permissions()
    record_types = access.registered_record_types()
    log: list[str] = []
    async with write():
        existing = {row["code"]: _load(row) for row in await Role.select()}
        for code in access.BUILTIN_ROLES:
            if code not in existing:
                await Role.insert(Role(code=code, name="", builtin=True, updated_at=utcnow()))
                existing[code] = {"code": code, "permissions": [], "scopes": {}, "seen": []}
                existing[code]["hidden_fields"] = []
                log.append(f"created role {code}")
        for code, role in existing.items():
            seen = set(role["seen"])
            granted = list(role["permissions"])
            scopes = dict(role["scopes"])
            for permission in permissions.values():
                key = "permission:" + permission.code
                if key not in seen:
                    seen.add(key)
                    if code in permission.default_roles and permission.code not in granted:
                        granted.append(permission.code)
            for record_type in record_types.values():
                key = "record:" + record_type.code
                if key not in seen:
                    seen.add(key)
                    default = access.DEFAULT_SCOPE.get(code, "own")
                    scopes[record_type.code] = record_type.default_scopes.get(code, default)
            if seen != set(role["seen"]):
                await Role.update(
                    {
                        Role.permissions: sorted(granted),
                        Role.scopes: scopes,
                        Role.seen: sorted(seen),
                    }
                ).where(Role.code == code)
    return log


async def list_roles() -> list[dict[str, Any]]:
    rows = await Role.select().order_by(Role.builtin, ascending=False).order_by(Role.code)
    counts = await fetch(
        "SELECT role, COUNT(*) AS n FROM core_user WHERE active = {} GROUP BY role", True
    )
    users_by_role = {row["role"]: row["n"] for row in counts}
    roles = [_load(row) for row in rows]
    for role in roles:
        role["user_count"] = users_by_role.get(role["code"], 0)
    return roles


async def role_codes() -> list[str]:
    return [row["code"] for row in await Role.select(Role.code).order_by(Role.code)]


async def get_role(code: str) -> dict[str, Any]:
    row = await Role.select().where(Role.code == code).first()
    if row is None:
        raise NotFound(code)
    return _load(row)


def _validate_rules(data: dict[str, Any]) -> dict[str, Any]:
    """Permissions, scopes, hidden fields and limits from a role form."""
    form = Form(data)
    form.field("name", text(100, required=True))
    form.field("export_max_rows", integer(minimum=0, required=False))
    form.field("export_daily_rows", integer(minimum=0, required=False))
    known_permissions = access.registered_permissions()
    record_types = access.registered_record_types()
    chosen = data.get("permissions") or []
    chosen = [chosen] if isinstance(chosen, str) else list(chosen)
    unknown = [code for code in chosen if code not in known_permissions]
    if unknown:
        form.error("permissions", _("Unknown permission: %(code)s", code=unknown[0]))
    scopes: dict[str, str] = {}
    for code in record_types:
        scope = data.get("scope:" + code, "own")
        if scope not in access.SCOPES:
            form.error("scope:" + code, _("Choose one of the offered values."))
        scopes[code] = scope
    hideable = {f for r in record_types.values() for f, _label in r.hideable_fields}
    hidden = data.get("hidden_fields") or []
    hidden = [hidden] if isinstance(hidden, str) else list(hidden)
    if any(code not in hideable for code in hidden):
        form.error("hidden_fields", _("Choose one of the offered values."))
    form.raise_if_invalid()
    return {
        "name": form.cleaned["name"],
        "permissions": sorted(set(chosen)),
        "scopes": scopes,
        "hidden_fields": sorted(set(hidden)),
        "totp_required": str(data.get("totp_required", "")).lower() in ("1", "on", "true", "yes"),
        "export_max_rows": form.cleaned["export_max_rows"],
        "export_daily_rows": form.cleaned["export_daily_rows"],
    }


def _keep_unregistered(before: dict[str, Any], rules: dict[str, Any]) -> dict[str, Any]:
    """Rules of a plugin disabled for now are not on the form; they must survive a save,
    so the role is as it was when the plugin comes back."""
    permissions = access.registered_permissions()
    record_types = access.registered_record_types()
    hideable = {f for r in record_types.values() for f, _label in r.hideable_fields}
    kept = [p for p in before["permissions"] if p not in permissions]
    rules["permissions"] = sorted({*rules["permissions"], *kept})
    rules["scopes"] = {
        **{k: v for k, v in before["scopes"].items() if k not in record_types},
        **rules["scopes"],
    }
    hidden_kept = [f for f in before["hidden_fields"] if f not in hideable]
    rules["hidden_fields"] = sorted({*rules["hidden_fields"], *hidden_kept})
    return rules


async def create_role(code: str, data: dict[str, Any]) -> str:
    code = code.strip().lower()
    if not _CODE.match(code):
        raise ValidationError(
            {"code": _("Use 2-32 lower-case Latin letters, digits or _, starting with a letter.")}
        )
    if await Role.exists().where(Role.code == code):
        raise ValidationError({"code": _("A role with this code exists.")})
    rules = _validate_rules(data)
    seen = [f"permission:{c}" for c in access.registered_permissions()]
    seen += [f"record:{c}" for c in access.registered_record_types()]
    async with write():
        await Role.insert(Role(code=code, builtin=False, seen=sorted(seen), updated_at=utcnow()))
        await Role.update({getattr(Role, k): v for k, v in rules.items()}).where(Role.code == code)
        await audit.record("role.create", "role", code, rules["name"], {"rules": [None, rules]})
    return code


async def update_role(code: str, data: dict[str, Any]) -> None:
    before = await get_role(code)
    rules = _keep_unregistered(before, _validate_rules(data))
    default_name = access.BUILTIN_ROLES.get(code)
    if default_name is not None and rules["name"] == str(default_name):
        rules["name"] = ""  # still the default: keep following the reader's language
    shown_name = rules["name"] or str(default_name)
    changes = audit.diff(before, {**rules, "name": shown_name})
    if not changes:
        return
    async with write():
        await Role.update(
            {**{getattr(Role, k): v for k, v in rules.items()}, Role.updated_at: utcnow()}
        ).where(Role.code == code)
        await audit.record("role.update", "role", code, shown_name, changes)


async def delete_role(code: str) -> None:
    role = await get_role(code)
    if role["builtin"]:
        raise ValidationError({"code": _("Built-in roles cannot be deleted.")})
    if await User.exists().where(User.role == code):
        raise ValidationError({"code": _("Move the users of this role to another role first.")})
    async with write():
        await Role.delete().where(Role.code == code)
        await audit.record("role.delete", "role", code, role["name"])
