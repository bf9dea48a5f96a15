"""Administration of users, roles and teams, and offboarding."""

from __future__ import annotations

from typing import Any

HANDLERS: list[Any] = []
