"""The audit log browser and its export."""

from __future__ import annotations

from typing import Any

HANDLERS: list[Any] = []
