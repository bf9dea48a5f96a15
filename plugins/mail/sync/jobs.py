"""Background jobs of the incoming side: one mailbox's sync, and the minute tick."""

from __future__ import annotations

from core.jobs import actor
from plugins.mail.sync.engine import sync_mailbox
from plugins.mail.tables import Mailbox

SYNC_TIME_LIMIT_MS = 3 * 60 * 60 * 1000
"""A first sync of a large mailbox takes a while; later runs take seconds."""


@actor(max_retries=0, time_limit=SYNC_TIME_LIMIT_MS)
async def sync_mailbox_job(mailbox_id: int) -> None:
    # No retries: the minute tick runs it again, and a failure is on the mailbox page.
    await sync_mailbox(mailbox_id)


@actor(max_retries=0)
async def sync_all_mailboxes() -> None:
    """Every minute: queue a sync of each enabled mailbox (a running one is skipped)."""
    for row in await Mailbox.select(Mailbox.id).where(Mailbox.sync_enabled.eq(True)):
        sync_mailbox_job.send(row["id"])
