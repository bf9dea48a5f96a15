"""The outgoing side's Dramatiq actors; the work itself lives in compose and mailings."""

from __future__ import annotations

from core.jobs import actor
from plugins.mail.outgoing import compose, mailings


@actor(max_retries=3)
async def send_outgoing(outgoing_id: int) -> None:
    # Send failures are retried by compose.deliver with its own backoff and shown on the
    # message; Dramatiq's retries only cover a crash of the job itself (database down).
    await compose.deliver(outgoing_id)


@actor(max_retries=3, time_limit=int(mailings.RUN_SECONDS + 120) * 1000)
async def run_mailing(mailing_id: int) -> None:
    await mailings.run(mailing_id)


@actor(max_retries=0)
async def sweep_outgoing() -> None:
    # No retries: the next run, a minute later, does the same.
    await compose.sweep()
    await mailings.sweep()
