"""CSV and Excel exports of the lists, within each role's limits."""

from __future__ import annotations

from typing import Any

HANDLERS: list[Any] = []
