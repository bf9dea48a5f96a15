"""Route handlers of the core, one module per area."""

from __future__ import annotations

from typing import Any


def all_handlers() -> list[Any]:
    from core.web.controllers import auth, clients

    return [*auth.HANDLERS, *clients.HANDLERS]
