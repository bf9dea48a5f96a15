"""A sync killed with SIGKILL in the middle of a batch loses nothing and doubles nothing."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from datetime import timedelta
from typing import Any

from plugins.mail.tests.conftest import MakeMailbox, make_client, make_message
from plugins.mail.tests.dovecot import Dovecot
from plugins.mail.tests.test_sync import counts


async def test_sync_killed_mid_batch_then_rerun(
    dovecot: Dovecot, make_mailbox: MakeMailbox, manager: dict[str, Any]
) -> None:
    from core.services.common import utcnow
    from plugins.mail.sync.engine import sync_mailbox
    from plugins.mail.tables import Mailbox, MailFolder, MailMessage

    acme = await make_client(manager, "Acme", "ivan@acme-corp.ru")
    mailbox_id, login = await make_mailbox(manager)
    for i in range(35):
        dovecot.deliver(login, make_message(f"message {i:02d}", to=login))

    child = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "plugins.mail.tests.sync_child", str(mailbox_id), "15"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
    # The first batch (10) was committed with its cursor; the second died mid-write.
    after_crash = await counts()
    assert after_crash == {"messages": 10, "locations": 10, "links": 10}
    folder = await MailFolder.select().where(MailFolder.role == "inbox").first()
    assert folder["last_uid"] == 10

    # The dead process still holds the lease; it runs out (simulated) and the next
    # scheduled sync picks the mailbox up again.
    await Mailbox.update({Mailbox.sync_lease_until: utcnow() - timedelta(seconds=1)}).where(
        Mailbox.id == mailbox_id
    )
    report = await sync_mailbox(mailbox_id)
    assert report.folders["inbox"] == 25

    assert await counts() == {"messages": 35, "locations": 35, "links": 35}
    subjects = sorted(r["subject"] for r in await MailMessage.select(MailMessage.subject))
    assert subjects == [f"message {i:02d}" for i in range(35)]
    from core.tables import TimelineEntry

    assert (
        await TimelineEntry.count().where(
            (TimelineEntry.client == acme) & (TimelineEntry.kind == "mail.message")
        )
        == 35
    )
    assert (await sync_mailbox(mailbox_id)).folders["inbox"] == 0
