"""The nightly refresh of the embedded database's planner statistics (core.db)."""

from __future__ import annotations

from core.db import refresh_statistics
from core.jobs import actor


@actor(max_retries=0)
async def refresh_planner_statistics() -> None:
    # No retries: statistics a day old still serve.
    await refresh_statistics()
