"""Clearing expired login sessions.

Expired rows already log nobody in (the lookup checks ``expires_at``); deleting them
keeps the session table, and with it every request's lookup, small.
"""

from __future__ import annotations

from core.jobs import actor
from core.services.common import utcnow
from core.tables import Session


async def delete_expired_sessions() -> int:
    removed = await Session.delete().where(Session.expires_at < utcnow()).returning(Session.id)
    return len(removed)


@actor(max_retries=0)
async def clear_expired_sessions() -> None:
    # No retries: tomorrow's run removes whatever this one did not.
    await delete_expired_sessions()
