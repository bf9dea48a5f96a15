"""Route handlers of the core, one module per area."""

from __future__ import annotations

from typing import Any


def all_handlers() -> list[Any]:
    from core.web.controllers import (
        admin,
        api,
        audit_log,
        auth,
        backups,
        clients,
        dashboard,
        deals,
        exports,
        files,
        health,
        live,
        notifications,
        tasks,
    )

    modules = [
        health,
        auth,
        dashboard,
        clients,
        deals,
        tasks,
        files,
        notifications,
        live,
        api,
        admin,
        audit_log,
        exports,
        backups,
    ]
    return [handler for module in modules for handler in module.HANDLERS]
