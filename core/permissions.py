"""Permissions registered by the core and plugins (the ``permissions`` hook).

Until roles become editable, a role has exactly the permissions whose
``default_roles`` name it; administrators have every permission.
"""

from __future__ import annotations

from typing import Any

from core.hooktypes import Permission
from core.runtime import get_runtime


def registered() -> dict[str, Permission]:
    return {p.code: p for p in get_runtime().plugins.collect("permissions")}


def has_permission(user: dict[str, Any] | None, code: str) -> bool:
    if not user:
        return False
    if user["role"] == "admin":
        return True
    permission = registered().get(code)
    return permission is not None and user["role"] in permission.default_roles
