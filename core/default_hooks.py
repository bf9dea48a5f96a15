"""The core's own contributions, made through the same hooks as any plugin."""

from __future__ import annotations

from core.hookspecs import hookimpl


@hookimpl
def piccolo_apps() -> list[str]:
    return []
