"""The sync against a real (private) Dovecot: stored once, matched, never \\Seen."""

from __future__ import annotations

import json
import uuid
from datetime import date
from typing import Any

from plugins.mail.tests.conftest import MakeMailbox, make_client, make_message
from plugins.mail.tests.dovecot import Dovecot


async def counts() -> dict[str, int]:
    from plugins.mail.tables import MailLocation, MailMessage, MailMessageClient

    return {
        "messages": await MailMessage.count(),
        "locations": await MailLocation.count(),
        "links": await MailMessageClient.count(),
    }


async def timeline_of(client_id: int) -> list[dict[str, Any]]:
    from core.tables import TimelineEntry

    return await TimelineEntry.select().where(
        (TimelineEntry.client == client_id) & (TimelineEntry.kind == "mail.message")
    )


async def test_inbox_and_sent_synced_matched_and_left_unseen(
    dovecot: Dovecot, make_mailbox: MakeMailbox, manager: dict[str, Any]
) -> None:
    from plugins.mail.sync.engine import sync_mailbox
    from plugins.mail.tables import MailMessage

    acme = await make_client(manager, "Acme", "ivan@acme-corp.ru")
    mailbox_id, login = await make_mailbox(manager)
    dovecot.deliver(login, make_message("Invoice please", sender="ivan@acme-corp.ru", to=login))
    dovecot.deliver(
        login,
        make_message("Here it is", sender=login, to="Ivan <ivan@acme-corp.ru>"),
        folder="Sent",
        flags="(\\Seen)",
    )
    dovecot.deliver(login, make_message("Newsletter", sender="news@somewhere.example", to=login))

    report = await sync_mailbox(mailbox_id)

    assert report.folders == {"inbox": 2, "sent": 1}
    assert await counts() == {"messages": 3, "locations": 3, "links": 2}
    rows = {r["subject"]: r for r in await MailMessage.select()}
    assert rows["Here it is"]["direction"] == "out" and rows["Invoice please"]["direction"] == "in"
    assert rows["Newsletter"]["matched"] is False
    entries = await timeline_of(acme)
    assert sorted(
        json.loads(e["payload"])["subject"]
        if isinstance(e["payload"], str)
        else e["payload"]["subject"]
        for e in entries
    ) == ["Here it is", "Invoice please"]
    assert all(b"\\Seen" not in flags for flags in dovecot.flags(login)), "INBOX left unread"

    again = await sync_mailbox(mailbox_id)
    assert again.folders == {"inbox": 0, "sent": 0}
    dovecot.deliver(login, make_message("One more", sender="ivan@acme-corp.ru", to=login))
    assert (await sync_mailbox(mailbox_id)).folders == {"inbox": 1, "sent": 0}
    assert await counts() == {"messages": 4, "locations": 4, "links": 3}
    assert len(await timeline_of(acme)) == 3


async def test_same_message_in_two_mailboxes_is_stored_once(
    dovecot: Dovecot, make_mailbox: MakeMailbox, manager: dict[str, Any], admin: dict[str, Any]
) -> None:
    from plugins.mail.sync.engine import sync_mailbox

    acme = await make_client(manager, "Acme", "ivan@acme-corp.ru")
    personal, login = await make_mailbox(manager)
    shared, shared_login = await make_mailbox(kind="shared")
    raw = make_message("To both of you", to=f"{login}, {shared_login}")
    dovecot.deliver(login, raw)
    dovecot.deliver(shared_login, raw)

    await sync_mailbox(personal)
    await sync_mailbox(shared)

    assert await counts() == {"messages": 1, "locations": 2, "links": 1}
    assert len(await timeline_of(acme)) == 1


async def test_uidvalidity_change_resyncs_without_duplicates(
    dovecot: Dovecot, make_mailbox: MakeMailbox, manager: dict[str, Any]
) -> None:
    from plugins.mail.sync.engine import sync_mailbox
    from plugins.mail.tables import MailFolder

    await make_client(manager, "Acme", "ivan@acme-corp.ru")
    login = dovecot.add_user()
    conn = dovecot.connect(login)
    conn.create('"Work"')
    conn.logout()
    mailbox_id, _ = await make_mailbox(manager, login=login, inbox_folder="Work")
    old = [make_message(f"old {i}") for i in range(3)]
    for raw in old:
        dovecot.deliver(login, raw, folder="Work")
    await sync_mailbox(mailbox_id)
    before = await MailFolder.select().where(MailFolder.role == "inbox").first()

    conn = dovecot.connect(login)  # the folder is recreated: new UIDVALIDITY, UIDs from 1
    conn.delete('"Work"')
    conn.create('"Work"')
    conn.logout()
    for raw in [*old, make_message("new one")]:
        dovecot.deliver(login, raw, folder="Work")
    await sync_mailbox(mailbox_id)

    after = await MailFolder.select().where(MailFolder.role == "inbox").first()
    assert after["uidvalidity"] != before["uidvalidity"]
    assert after["last_uid"] == 4
    c = await counts()
    assert c["messages"] == 4 and c["links"] == 4, c


async def test_first_sync_from_a_chosen_date(
    dovecot: Dovecot, make_mailbox: MakeMailbox, manager: dict[str, Any]
) -> None:
    from plugins.mail.sync.engine import sync_mailbox
    from plugins.mail.tables import MailMessage

    login = dovecot.add_user()
    mailbox_id, _ = await make_mailbox(manager, login=login, sync_since=date(2026, 1, 1))
    conn = dovecot.connect(login)
    for subject, when in (
        ("ancient", "01-Jan-2020 10:00:00 +0000"),
        ("recent", "10-Nov-2026 10:00:00 +0000"),
    ):
        conn.append('"INBOX"', None, f'"{when}"', make_message(subject))
    conn.logout()

    await sync_mailbox(mailbox_id)

    assert [r["subject"] for r in await MailMessage.select(MailMessage.subject)] == ["recent"]


async def test_malformed_mail_never_breaks_a_batch(
    dovecot: Dovecot, make_mailbox: MakeMailbox, manager: dict[str, Any]
) -> None:
    from pathlib import Path

    from plugins.mail import storage
    from plugins.mail.sync.engine import sync_mailbox
    from plugins.mail.tables import MailAttachment, MailMessage

    koi = await make_client(manager, "KOI", "ivan@koi.example.ru")
    mailbox_id, login = await make_mailbox(manager)
    samples = sorted((Path(__file__).parent / "samples").glob("*.eml"))
    for path in samples:
        dovecot.deliver(login, path.read_bytes())
    big = bytes(range(256)) * (20 * 1024 * 1024 // 256)
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "ivan@koi.example.ru", login, "20 MB"
    msg["Message-ID"] = "<big@koi.example.ru>"
    msg.set_content("see attached")
    msg.add_attachment(big, maintype="application", subtype="octet-stream", filename="big.bin")
    dovecot.deliver(login, msg.as_bytes())
    dovecot.deliver(login, b"\x00garbage\r\n\r\n\xff\xfe")

    report = await sync_mailbox(mailbox_id)

    assert report.folders["inbox"] == len(samples) + 2
    assert await MailMessage.count() == len(samples) + 2
    assert report.malformed >= 4
    subjects = {r["subject"] for r in await MailMessage.select(MailMessage.subject)}
    assert {"Тема письма: счёт на оплату", "Коммерческое предложение", "20 MB"} <= subjects
    attachment = await MailAttachment.select().where(MailAttachment.filename == "big.bin").first()
    assert attachment["size"] == len(big)
    assert storage.path_of(attachment["storage_key"]).read_bytes() == big
    assert len(await timeline_of(koi)) == 2


async def test_domain_matching_skips_free_mail(
    dovecot: Dovecot, make_mailbox: MakeMailbox, manager: dict[str, Any]
) -> None:
    from plugins.mail.sync.engine import sync_mailbox
    from plugins.mail.tables import MailMessage

    corp = await make_client(manager, "Corp", "boss@corp-domain.ru")
    await make_client(manager, "Gmail person", "someone@gmail.com")
    mailbox_id, login = await make_mailbox(manager)
    dovecot.deliver(login, make_message("colleague", sender="other@corp-domain.ru", to=login))
    dovecot.deliver(login, make_message("stranger", sender="stranger@gmail.com", to=login))

    await sync_mailbox(mailbox_id)

    matched = {r["subject"]: r["matched"] for r in await MailMessage.select()}
    assert matched == {"colleague": True, "stranger": False}
    assert len(await timeline_of(corp)) == 1


async def test_a_second_sync_waits_for_the_lease(
    make_mailbox: MakeMailbox, manager: dict[str, Any]
) -> None:
    from plugins.mail.sync.engine import _claim, sync_mailbox

    mailbox_id, _ = await make_mailbox(manager)
    assert await _claim(mailbox_id) is not None
    assert (await sync_mailbox(mailbox_id)).skipped


def _unique() -> str:
    return uuid.uuid4().hex


async def test_jobs_sync_every_enabled_mailbox_and_record_progress(
    dovecot: Dovecot, make_mailbox: MakeMailbox, manager: dict[str, Any], monkeypatch: Any
) -> None:
    from core.runtime import get_runtime
    from plugins.mail.sync import jobs
    from plugins.mail.tables import Mailbox

    schedule = {j.name: j for j in get_runtime().plugins.collect("scheduled_jobs")}
    assert schedule["mail.sync"].cron == "* * * * *"
    assert schedule["mail.sync"].actor is jobs.sync_all_mailboxes

    enabled, login = await make_mailbox(manager)
    await make_mailbox(manager, sync_enabled=False)
    queued: list[int] = []
    monkeypatch.setattr(jobs.sync_mailbox_job, "send", lambda mailbox_id: queued.append(mailbox_id))
    await jobs.sync_all_mailboxes.fn.__wrapped__()  # the coroutine, without a worker
    assert queued == [enabled]

    for i in range(7):
        dovecot.deliver(login, make_message(f"m{i}", to=login))
    await jobs.sync_mailbox_job.fn.__wrapped__(enabled)
    row = await Mailbox.select().where(Mailbox.id == enabled).first()
    progress = (
        json.loads(row["sync_progress"])
        if isinstance(row["sync_progress"], str)
        else row["sync_progress"]
    )
    assert progress == {"folder": "inbox", "done": 7, "total": 7}
    assert (
        row["sync_state"] == "idle" and row["last_sync_at"] is not None and row["last_error"] == ""
    )


async def test_a_failing_login_is_recorded_on_the_mailbox(
    make_mailbox: MakeMailbox, manager: dict[str, Any]
) -> None:
    import pytest

    from core.sealed import seal
    from plugins.mail.sync.engine import sync_mailbox
    from plugins.mail.sync.imap import ImapError
    from plugins.mail.tables import Mailbox

    mailbox_id, _ = await make_mailbox(manager, imap_password_sealed=seal("wrong"))
    with pytest.raises(ImapError):
        await sync_mailbox(mailbox_id)
    row = await Mailbox.select().where(Mailbox.id == mailbox_id).first()
    assert row["sync_state"] == "error" and "login refused" in row["last_error"]
    assert row["sync_lease_until"] is None, "the lease is released for the next try"


async def test_the_schema_itself_refuses_duplicates(
    make_mailbox: MakeMailbox, manager: dict[str, Any]
) -> None:
    import pytest

    from core.services.common import utcnow
    from plugins.mail.tables import MailFolder, MailLocation, MailMessage

    mailbox_id, _ = await make_mailbox(manager)
    folder = (
        await MailFolder.insert(
            MailFolder(mailbox=mailbox_id, role="inbox", name="INBOX")
        ).returning(MailFolder.id)
    )[0]["id"]
    row = {"message_key": "k", "thread_key": "t", "sent_at": utcnow(), "created_at": utcnow()}
    message = (await MailMessage.insert(MailMessage(**row)).returning(MailMessage.id))[0]["id"]
    with pytest.raises(Exception, match=r"(?i)unique"):
        await MailMessage.insert(MailMessage(**row))
    location = {
        "message": message,
        "mailbox": mailbox_id,
        "folder": folder,
        "uidvalidity": 7,
        "uid": 1,
    }
    await MailLocation.insert(MailLocation(**location))
    with pytest.raises(Exception, match=r"(?i)unique"):
        await MailLocation.insert(MailLocation(**location))
    with pytest.raises(Exception, match=r"(?i)unique"):
        await MailFolder.insert(MailFolder(mailbox=mailbox_id, role="inbox", name="Other"))
