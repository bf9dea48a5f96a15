"""Who may do what, and which records they see.

A role (table ``core_role``) holds granted permission codes, a visibility scope per
record type (``own``, ``team`` or ``all``) and fields hidden from it. Permissions and
record types are registered by the core and plugins through hooks; a new one is
offered once to the roles its defaults name, and after that only an admin changes it.

Each request runs with an `Access` for its user in a context variable, so every
service, the API, exports and plugin tabs filter through the same object instead
of re-implementing visibility. Outside requests (jobs, the CLI) the system access
sees everything.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from core.hooktypes import Permission, RecordType
from core.i18n import lazy_gettext as _l
from core.runtime import get_runtime

SCOPES = ("own", "team", "all")
ADMIN = "admin"
BUILTIN_ROLES = {
    "admin": _l("Administrator"),
    "head": _l("Head of sales"),
    "manager": _l("Manager"),
    "readonly": _l("Read-only"),
}
DEFAULT_SCOPE = {"admin": "all", "head": "team", "manager": "own", "readonly": "all"}

PUBLIC: dict[str, Any] = {"public": True}
"""Route ``opt`` for pages anyone may open (login, web hooks with their own checks)."""
ANY_USER: dict[str, Any] = {"any_user": True}
"""Route ``opt`` for pages every logged-in user may open (dashboard, own profile)."""


def needs(permission: str, **extra: Any) -> dict[str, Any]:
    """Route ``opt`` requiring a permission: ``@get("/x", opt=needs("core.clients.view"))``."""
    return {"permission": permission, **extra}


def registered_permissions() -> dict[str, Permission]:
    return {p.code: p for p in get_runtime().plugins.collect("permissions")}


def registered_record_types() -> dict[str, RecordType]:
    return {r.code: r for r in get_runtime().plugins.collect("record_types")}


@dataclass(frozen=True)
class Access:
    """What one user may do and see; built once per request by `for_user`."""

    user: dict[str, Any] | None
    role: dict[str, Any] = field(default_factory=dict)
    team_user_ids: frozenset[int] = frozenset()
    system: bool = False
    checked_clients: set[int] = field(default_factory=set, compare=False)
    """Clients this request already found visible, so a card's panels do not each ask
    again. Never filled for the shared system access (jobs may outlive a deletion)."""

    @property
    def user_id(self) -> int | None:
        return int(self.user["id"]) if self.user else None

    @property
    def is_admin(self) -> bool:
        return self.system or bool(self.user and self.user["role"] == ADMIN)

    def can(self, permission: str) -> bool:
        if self.is_admin:
            return True
        return bool(self.user) and permission in self.role.get("permissions", ())

    def scope(self, record_type: str) -> str:
        if self.is_admin:
            return "all"
        if not self.user:
            return "own"
        scope = self.role.get("scopes", {}).get(record_type)
        return scope if scope in SCOPES else "own"

    def visible_owners(self, record_type: str) -> frozenset[int] | None:
        """User ids whose records of this type are visible; None means all records."""
        scope = self.scope(record_type)
        if scope == "all":
            return None
        if self.user_id is None:
            return frozenset()
        if scope == "team":
            return self.team_user_ids | {self.user_id}
        return frozenset({self.user_id})

    def owner_filter(self, record_type: str, *owner_columns: Any) -> Any | None:
        """A Piccolo condition limiting a query to visible records (None: no limit).

        Several columns are alternatives: a task is visible to its assignee and its author.
        """
        owners = self.visible_owners(record_type)
        if owners is None:
            return None
        ids = sorted(owners) or [0]
        condition = None
        for column in owner_columns:
            part = column.is_in(ids)
            condition = part if condition is None else condition | part
        return condition

    def owner_sql(self, record_type: str, *owner_columns: str) -> tuple[str, list[int]]:
        """`owner_filter` for a raw query: a condition with ``{}`` placeholders and their
        values, or ``("", [])`` when every record is visible."""
        owners = self.visible_owners(record_type)
        if owners is None:
            return "", []
        ids = sorted(owners) or [0]
        marks = ", ".join("{}" for _ in ids)
        condition = " OR ".join(f"{column} IN ({marks})" for column in owner_columns)
        return f"({condition})", ids * len(owner_columns)

    def client_filter(self, record_type: str, client_column: Any) -> Any | None:
        """For records attached to a client: visible when their client's owner is.

        ``own`` then means "records on clients I am responsible for".
        """
        owners = self.visible_owners(record_type)
        if owners is None:
            return None
        from piccolo.columns.combination import WhereRaw

        ids = ", ".join(str(int(i)) for i in sorted(owners)) or "0"
        column = client_column._meta.get_full_name(with_alias=False)
        return WhereRaw(f"{column} IN (SELECT id FROM core_client WHERE responsible IN ({ids}))")

    def remember_visible(self, client_id: int) -> None:
        if self.user is not None:
            self.checked_clients.add(client_id)

    def sees_owner(self, record_type: str, *owner_ids: int | None) -> bool:
        owners = self.visible_owners(record_type)
        return owners is None or any(o in owners for o in owner_ids if o is not None)

    def hides(self, field_code: str) -> bool:
        if self.is_admin:
            return False
        return field_code in self.role.get("hidden_fields", ())

    def redact(self, row: dict[str, Any], fields: Mapping[str, tuple[str, ...]]) -> dict[str, Any]:
        """Blank (None) the values of hidden fields; ``fields`` maps a field code to row keys.

        None rather than an empty value, so templates and API clients can tell
        "hidden from you" from "empty".
        """
        for code, keys in fields.items():
            if self.hides(code):
                for key in keys:
                    if key in row:
                        row[key] = None
        return row


SYSTEM = Access(user=None, system=True)
ANONYMOUS = Access(user=None)
_current: ContextVar[Access] = ContextVar("kartoteka_access", default=SYSTEM)


def current() -> Access:
    """The access of the request being served (system access outside requests)."""
    return _current.get()


@contextmanager
def acting_as(access: Access) -> Iterator[Access]:
    token = _current.set(access)
    try:
        yield access
    finally:
        _current.reset(token)


async def for_user(user: dict[str, Any] | None, role_row: dict[str, Any] | None = None) -> Access:
    """Load the role (one row, unless the caller has it) and, when a scope needs it,
    the user's team."""
    from core.tables import Role, User

    if not user:
        return ANONYMOUS
    if role_row is None or role_row.get("code") is None:
        role_row = await Role.select().where(Role.code == user["role"]).first()
    role = decode_role(dict(role_row or {}))
    role["permissions"] = frozenset(role["permissions"])
    role["hidden_fields"] = frozenset(role["hidden_fields"])
    team_ids: frozenset[int] = frozenset()
    if user.get("team") and "team" in role["scopes"].values():
        rows = await User.select(User.id).where(User.team == user["team"])
        team_ids = frozenset(int(r["id"]) for r in rows)
    return Access(user=user, role=role, team_user_ids=team_ids)


def decode_role(row: dict[str, Any]) -> dict[str, Any]:
    """A ``core_role`` row with its JSON columns as Python values (SQLite hands back text)."""
    for key, default in (("permissions", []), ("scopes", {}), ("hidden_fields", []), ("seen", [])):
        value = row.get(key)
        row[key] = json.loads(value) if isinstance(value, str) and value else value or default
    return row
