"""Administration of user accounts: create, edit, reset credentials, offboard.

Every change is audited in the same transaction as the change. Deactivation cuts
the user off at once (their sessions and API tokens go) and can hand everything
they own to a colleague in the same step, so no client is left with a manager who
no longer works here. The last active administrator cannot be demoted or
deactivated: someone must always be able to administer the install.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from piccolo.query import Max

from core import access, i18n
from core.i18n import _
from core.runtime import get_runtime
from core.services import audit, deal_totals, login_guard, notifications, roles, teams, users
from core.services.common import NotFound, as_utc, write
from core.tables import ApiToken, AuditEntry, Client, Deal, Task, User
from core.validation import (
    FieldError,
    Form,
    ValidationError,
    choice,
    integer,
    normalize_email,
    text,
)

STATUSES = ("active", "inactive", "all")
_USERNAME = re.compile(r"^[\w.@+-]+$")
EDITABLE = ("full_name", "email", "role", "team", "locale")
"""Fields of the edit form, in the order the audit entry lists them."""


def _label(user: dict[str, Any]) -> str:
    return f"{user['full_name']} ({user['username']})"


async def list_users(status: str = "active") -> list[dict[str, Any]]:
    """Users for the admin list: role and team names, whether 2FA is on."""
    query = User.select(
        User.id,
        User.username,
        User.full_name,
        User.email,
        User.role,
        User.team,
        User.team.name.as_alias("team_name"),
        User.active,
        User.must_change_password,
        User.totp_secret,
    )
    if status == "active":
        query = query.where(User.active.eq(True))
    elif status == "inactive":
        query = query.where(User.active.eq(False))
    rows = await query.order_by(User.full_name)
    role_names = {role["code"]: role["name"] for role in await roles.list_roles()}
    last_logins = await _last_logins([row["id"] for row in rows])
    for row in rows:
        row["totp_on"] = bool(row.pop("totp_secret"))
        row["role_name"] = role_names.get(row["role"], row["role"])
        row["last_login"] = last_logins.get(row["id"])
    return rows


async def _last_logins(user_ids: list[int]) -> dict[int, datetime]:
    """Latest successful login per user, from the audit log (index core_audit_actor)."""
    if not user_ids:
        return {}
    rows = (
        await AuditEntry.select(AuditEntry.actor_id, Max(AuditEntry.occurred_at, alias="at"))
        .where(AuditEntry.actor_id.is_in(user_ids) & (AuditEntry.action == login_guard.SUCCESS))
        .group_by(AuditEntry.actor_id)
    )
    # An aggregate loses the column type on SQLite: the timestamp comes back as text.
    return {
        row["actor_id"]: as_utc(
            datetime.fromisoformat(row["at"]) if isinstance(row["at"], str) else row["at"]
        )
        for row in rows
    }


async def get_user(user_id: int) -> dict[str, Any]:
    """The account without its secrets; ``totp_on`` says whether 2FA is set up."""
    row = (
        await User.select(*User.all_columns(exclude=[User.password_hash]))
        .where(User.id == user_id)
        .first()
    )
    if row is None:
        raise NotFound(user_id)
    row["totp_on"] = bool(row.pop("totp_secret"))
    return row


def _optional_email(value: str) -> str:
    return normalize_email(value) if value else ""


def _username(value: str) -> str:
    if not _USERNAME.match(value):
        raise FieldError(_("Use letters, digits and . _ @ + - only, no spaces."))
    return value


async def _validate(data: dict[str, Any], user_id: int | None = None) -> dict[str, Any]:
    """Cleaned values of the user form; ``user_id`` None means a new user (with user name)."""
    form = Form(data)
    if user_id is None:
        username = form.field("username", text(64, required=True), _username)
        if username and await User.exists().where(User.username == username):
            form.error("username", _("This user name is taken."))
    form.field("full_name", text(200, required=True))
    form.field("email", text(254), _optional_email)
    form.field("role", choice(await roles.role_codes()))
    team = form.field("team", integer(minimum=1, required=False))
    if team is not None and team not in await teams.team_names():
        form.error("team", _("Choose one of the offered values."))
    form.field("locale", choice(["", *get_runtime().settings.languages]))
    form.raise_if_invalid()
    return form.cleaned


async def _audit_view(values: dict[str, Any]) -> dict[str, Any]:
    """The audited fields, the team by name: the log must read right after a rename."""
    names = await teams.team_names()
    view = {key: values.get(key) for key in EDITABLE}
    view["team"] = names.get(view["team"]) if view["team"] else None
    return view


async def _active_admins() -> int:
    return int(await User.count().where((User.role == access.ADMIN) & User.active.eq(True)))


async def create_user(data: dict[str, Any]) -> tuple[int, str]:
    """A new account with a generated password, returned once for the admin to hand over.

    The user must change it at the first login.
    """
    values = await _validate(data)
    password = users.generate_password()
    async with write():
        row = await users.create_user(
            values["username"],
            values["full_name"],
            password,
            role=values["role"],
            email=values["email"],
            locale=values["locale"],
        )
        user_id = int(row["id"])
        await User.update({User.team: values["team"], User.must_change_password: True}).where(
            User.id == user_id
        )
        view = {"username": values["username"], **await _audit_view(values)}
        await audit.record(
            "user.create",
            "user",
            user_id,
            _label(values),
            audit.diff({}, {k: v for k, v in view.items() if v not in ("", None)}),
        )
    return user_id, password


async def update_user(user_id: int, data: dict[str, Any]) -> None:
    """Save the edit form; a role change gets its own audit entry besides the field diff."""
    before = await get_user(user_id)
    values = await _validate(data, user_id)
    async with write():
        demoted = before["role"] == access.ADMIN and values["role"] != access.ADMIN
        if demoted and before["active"] and await _active_admins() <= 1:
            raise ValidationError(
                {"role": _("This is the last active administrator; make someone else one first.")}
            )
        changes = audit.diff(await _audit_view(before), await _audit_view(values))
        if not changes:
            return
        await User.update({getattr(User, key): values[key] for key in EDITABLE}).where(
            User.id == user_id
        )
        label = _label({**before, **values})
        await audit.record("user.update", "user", user_id, label, changes)
        if "role" in changes:
            await audit.record(
                "user.role_changed", "user", user_id, label, {"role": changes["role"]}
            )


async def reset_password(user_id: int) -> str:
    """A temporary password for the admin to pass on; it must be changed at login.

    The user's sessions end, so whoever was using the account is out at once.
    """
    user = await get_user(user_id)
    password = users.generate_password()
    async with write():
        ended = await users.revoke_sessions(user_id)
        await users.set_password(user_id, password, must_change=True)
        await audit.record(
            "user.password_reset", "user", user_id, _label(user), {"sessions": [ended, 0]}
        )
    return password


async def reset_second_factor(user_id: int) -> bool:
    """Forget the user's TOTP secret (lost phone); they enrol again if their role needs it."""
    user = await get_user(user_id)
    if not user["totp_on"]:
        return False
    async with write():
        await User.update({User.totp_secret: ""}).where(User.id == user_id)
        await audit.record(
            "user.totp_reset", "user", user_id, _label(user), {"totp": [True, False]}
        )
    return True


async def holdings(user_id: int) -> dict[str, int]:
    """What offboarding hands over: clients and deals (not deleted), open tasks."""
    return {
        "clients": await Client.count().where(
            (Client.responsible == user_id) & Client.deleted_at.is_null()
        ),
        "deals": await Deal.count().where(
            (Deal.responsible == user_id) & Deal.deleted_at.is_null()
        ),
        "tasks": await Task.count().where((Task.assignee == user_id) & Task.done_at.is_null()),
    }


async def _hand_over(user_id: int, receiver_id: int) -> None:
    leaving = await deal_totals.of_deals("d.responsible = {}", user_id)
    await deal_totals.add(
        [
            *deal_totals.negated(leaving),
            *(
                ((stage, receiver_id, cur), n, amount)
                for (stage, _owner, cur), n, amount in leaving
            ),
        ]
    )
    await Client.update({Client.responsible: receiver_id}).where(
        (Client.responsible == user_id) & Client.deleted_at.is_null()
    )
    await Deal.update({Deal.responsible: receiver_id}).where(
        (Deal.responsible == user_id) & Deal.deleted_at.is_null()
    )
    await Task.update({Task.assignee: receiver_id}).where(
        (Task.assignee == user_id) & Task.done_at.is_null()
    )


async def _receiver(data: dict[str, Any], user_id: int) -> dict[str, Any] | None:
    form = Form(data)
    receiver_id = form.field("receiver", integer(minimum=1, required=False))
    form.raise_if_invalid()
    if receiver_id is None:
        return None
    receiver = await User.select().where((User.id == receiver_id) & User.active.eq(True)).first()
    if receiver is None or receiver_id == user_id:
        raise ValidationError({"receiver": _("Choose another active user.")})
    return receiver


@contextmanager
def _locale_of(user: dict[str, Any]) -> Iterator[None]:
    """Write a notification in its reader's language, not the admin's."""
    token = i18n.current_locale.set(user["locale"] or get_runtime().settings.default_locale)
    try:
        yield
    finally:
        i18n.current_locale.reset(token)


async def deactivate(user_id: int, data: dict[str, Any]) -> dict[str, int]:
    """Offboard a user in one transaction; returns what was handed over (or kept).

    ``data["receiver"]``: the active user who gets the clients, deals and open tasks;
    empty keeps them with the deactivated user. The sessions and API tokens go
    either way, so the next request made with them is anonymous.
    """
    user = await get_user(user_id)
    me = access.current()
    if me.user_id == user_id:
        raise ValidationError({"user": _("You cannot deactivate yourself.")})
    if not user["active"]:
        raise ValidationError({"user": _("This user is already inactive.")})
    receiver = await _receiver(data, user_id)
    async with write():
        if user["role"] == access.ADMIN and await _active_admins() <= 1:
            raise ValidationError(
                {"user": _("This is the last active administrator; make someone else one first.")}
            )
        counts = await holdings(user_id)
        await User.update({User.active: False}).where(User.id == user_id)
        sessions = await users.revoke_sessions(user_id)
        tokens = await ApiToken.delete().where(ApiToken.user == user_id).returning(ApiToken.id)
        changes: dict[str, list[Any]] = {
            "active": [True, False],
            "sessions": [sessions, 0],
            "api_tokens": [len(tokens), 0],
        }
        summary = _label(user)
        if receiver is not None:
            await _hand_over(user_id, receiver["id"])
            changes["receiver"] = [None, receiver["id"]]
            summary = f"{summary} → {_label(receiver)}"
        for key, count in counts.items():
            changes[key] = [count, 0 if receiver is not None else count]
        await audit.record("user.deactivated", "user", user_id, summary, changes)
        if receiver is not None and any(counts.values()):
            with _locale_of(receiver):
                message = _(
                    "%(name)s was deactivated and their work is now yours: clients: %(clients)s, "
                    "deals: %(deals)s, open tasks: %(tasks)s.",
                    name=user["full_name"],
                    **counts,
                )
            await notifications.notify(
                receiver["id"], "user.handover", message, f"/clients?responsible={receiver['id']}"
            )
    return counts


async def reactivate(user_id: int) -> None:
    """Let a user back in; they log in with their password as before (reset it if unsure)."""
    user = await get_user(user_id)
    if user["active"]:
        return
    async with write():
        await User.update({User.active: True}).where(User.id == user_id)
        await audit.record(
            "user.reactivated", "user", user_id, _label(user), {"active": [False, True]}
        )


async def active_users(exclude: int | None = None) -> list[dict[str, Any]]:
    """Who can receive an offboarded user's work."""
    rows = await users.list_users(active_only=True)
    return [row for row in rows if row["id"] != exclude]
