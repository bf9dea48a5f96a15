"""Piccolo configuration (``PICCOLO_CONF=core.piccolo_conf``).

``DB`` and ``APP_REGISTRY`` are computed on access from the current settings, so the
`piccolo` CLI, the app and `kartoteka plugins enable` all see the same enabled set.
"""

from __future__ import annotations

from typing import Any

from core.db import app_registry, get_engine


def __getattr__(name: str) -> Any:
    if name == "DB":
        return get_engine()
    if name == "APP_REGISTRY":
        return app_registry()
    raise AttributeError(name)
