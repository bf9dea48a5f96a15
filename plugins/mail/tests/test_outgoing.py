"""Writing to a client: a reply sent through a real SMTP relay arrives in the
recipient's Dovecot mailbox and in the sender's Sent folder; failures are retried
with backoff, shown with their reason, and can be retried by hand."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import time
import uuid
from typing import Any

import pytest

from core.sealed import seal
from core.services import clients
from core.services.common import utcnow
from core.tables import TimelineEntry
from plugins.mail.outgoing import compose, smtp
from plugins.mail.outgoing.tables import FAILED, QUEUED, SENT, MailTemplate, OutgoingMessage
from plugins.mail.parsing import message_key
from plugins.mail.sync.engine import sync_mailbox
from plugins.mail.tables import Mailbox, MailLocation, MailMessage, MailMessageClient
from plugins.mail.tests.smtp_relay import PASSWORD, USER, free_port
from tests.support import csrf_token


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@crm-test.example.com"


async def sending_mailbox(
    dovecot: Any, relay: Any, owner_id: int, *, smtp_port: int | None = None
) -> dict[str, Any]:
    """A personal mailbox on the private Dovecot (IMAP) and the test relay (SMTP)."""
    address = unique("anna")
    dovecot.add_user(address, "imap-pass")
    rows = await Mailbox.insert(
        Mailbox(
            name="Anna",
            email=address,
            kind="personal",
            owner=owner_id,
            imap_host="127.0.0.1",
            imap_port=dovecot.port,
            imap_security="none",
            imap_user=address,
            imap_password_sealed=seal("imap-pass"),
            smtp_host="127.0.0.1",
            smtp_port=smtp_port or relay.port,
            smtp_security="none",
            smtp_user=USER,
            smtp_password_sealed=seal(PASSWORD),
            created_at=utcnow(),
        )
    ).returning(Mailbox.id)
    return await Mailbox.select().where(Mailbox.id == rows[0]["id"]).first()


def fetch_all(dovecot: Any, login: str, folder: str = "INBOX") -> list[tuple[bytes, Any]]:
    """(FLAGS, parsed message) of every message in a folder, read without changing flags."""
    conn = dovecot.connect(login)
    try:
        conn.select(f'"{folder}"', readonly=True)
        _typ, data = conn.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
        found = []
        for item in data:
            if isinstance(item, tuple):
                flags = re.search(rb"FLAGS \(([^)]*)\)", item[0])
                found.append(
                    (
                        flags.group(1) if flags else b"",
                        email.message_from_bytes(item[1], policy=email.policy.default),
                    )
                )
        return found
    finally:
        conn.logout()


async def incoming_message(client_id: int, sender: str, to: str) -> int:
    """A received message on the client's card, as the sync stores it."""
    rows = await MailMessage.insert(
        MailMessage(
            message_key=uuid.uuid4().hex,
            message_id="<question-1@client.example.com>",
            thread_key=uuid.uuid4().hex,
            references=["<older@client.example.com>"],
            subject="Price for 200 chairs",
            from_addr=sender,
            from_name="Boris Client",
            to_addrs=[to],
            sent_at=utcnow(),
            direction="in",
            text_body="Hello,\nhow much are 200 chairs?",
            created_at=utcnow(),
        )
    ).returning(MailMessage.id)
    message_id = rows[0]["id"]
    await MailMessageClient.insert(MailMessageClient(message=message_id, client=client_id))
    return message_id


@pytest.fixture
async def setup(dovecot: Any, relay: Any, admin: dict[str, Any]) -> dict[str, Any]:
    mailbox = await sending_mailbox(dovecot, relay, admin["id"])
    client_address = unique("boris")
    dovecot.add_user(client_address, "client-pass")
    client_id = await clients.create_client(
        {"name": "Chairs Ltd", "emails": client_address, "responsible": admin["id"]}, admin["id"]
    )
    return {"mailbox": mailbox, "client_id": client_id, "client_address": client_address}


async def test_reply_arrives_in_recipients_mailbox_and_senders_sent_folder(
    as_admin: Any, setup: dict[str, Any], dovecot: Any, relay: Any
) -> None:
    mailbox, client_id, address = setup["mailbox"], setup["client_id"], setup["client_address"]
    original = await incoming_message(client_id, address, mailbox["email"])

    form = await as_admin.get(f"/p/mail/clients/{client_id}/compose", params={"reply_to": original})
    assert form.status_code == 200
    assert "Re: Price for 200 chairs" in form.text
    assert "&gt; how much are 200 chairs?" in form.text

    response = await as_admin.post(
        f"/p/mail/clients/{client_id}/send",
        data={
            "mailbox": str(mailbox["id"]),
            "to": address,
            "subject": "Re: Price for 200 chairs",
            "body": "Dear {{ client.name }},\n200 chairs cost 1000.\n{{ user.full_name }}\n\n"
            "> how much are 200 chairs?",
            "in_reply_to": "<question-1@client.example.com>",
            "references": "<older@client.example.com> <question-1@client.example.com>",
            "reply_to": str(original),
        },
        files={"attachments": ("offer.txt", b"200 chairs: 1000", "text/plain")},
        headers={"x-csrftoken": csrf_token(as_admin)},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    row = await OutgoingMessage.select().where(OutgoingMessage.client == client_id).first()
    assert row["status"] == QUEUED

    assert await compose.deliver(row["id"]) == SENT

    received = fetch_all(dovecot, address)
    assert len(received) == 1
    flags, message = received[0]
    assert message["Subject"] == "Re: Price for 200 chairs"
    assert message["In-Reply-To"] == "<question-1@client.example.com>"
    assert message["References"].split() == [
        "<older@client.example.com>",
        "<question-1@client.example.com>",
    ]
    assert message["Message-ID"] == row["message_id"]
    body = message.get_body(("plain",)).get_content()
    assert "Dear Chairs Ltd," in body and "Anna Admin" in body
    assert [part.get_filename() for part in message.iter_attachments()] == ["offer.txt"]
    assert b"\\Seen" not in flags  # a delivery, not something we read

    sent = fetch_all(dovecot, mailbox["email"], "Sent")
    assert len(sent) == 1
    assert sent[0][1]["Message-ID"] == row["message_id"]
    assert b"\\Seen" in sent[0][0]

    done = await OutgoingMessage.select().where(OutgoingMessage.id == row["id"]).first()
    assert done["status"] == SENT and done["sent_copy_saved"] and done["error"] == ""
    # A second run of the job (the queue is at-least-once) sends nothing again.
    assert await compose.deliver(row["id"]) is None
    assert len(relay.messages_to(address)) == 1

    outbox = await as_admin.get("/p/mail/outbox")
    assert "Re: Price for 200 chairs" in outbox.text and "sent" in outbox.text

    # On the card at once, stored under its Message-ID like a synced message ...
    key = message_key(row["message_id"])
    stored = await MailMessage.select().where(MailMessage.message_key == key).first()
    assert (
        stored["direction"] == "out" and stored["in_reply_to"] == "<question-1@client.example.com>"
    )
    assert await MailMessageClient.exists().where(
        (MailMessageClient.message == stored["id"]) & (MailMessageClient.client == client_id)
    )
    entries = await TimelineEntry.select().where(
        (TimelineEntry.client == client_id) & (TimelineEntry.kind == "mail.message")
    )
    assert len(entries) == 1
    # ... so the sync of the Sent folder adds its server copy, not a second message.
    report = await sync_mailbox(mailbox["id"])
    assert report.folders.get("sent") == 1
    assert await MailMessage.count().where(MailMessage.message_key == key) == 1
    assert await MailLocation.count().where(MailLocation.message == stored["id"]) == 1
    assert (
        await TimelineEntry.count().where(
            (TimelineEntry.client == client_id) & (TimelineEntry.kind == "mail.message")
        )
        == 1
    )
    tab = await as_admin.get(f"/p/mail/clients/{client_id}/mail")
    assert "Re: Price for 200 chairs" in tab.text
    assert f"/p/mail/clients/{client_id}/compose?reply_to={original}" in tab.text
    timeline = await as_admin.get(f"/clients/{client_id}/timeline")
    assert "Re: Price for 200 chairs" in timeline.text
    card = await as_admin.get(f"/clients/{client_id}")
    assert f"/p/mail/clients/{client_id}/outgoing" in card.text
    panel = await as_admin.get(f"/p/mail/clients/{client_id}/outgoing")
    assert f"/p/mail/clients/{client_id}/compose" in panel.text


async def test_unknown_template_variable_is_shown_next_to_the_field(
    as_admin: Any, setup: dict[str, Any]
) -> None:
    response = await as_admin.post(
        f"/p/mail/clients/{setup['client_id']}/send",
        data={
            "mailbox": str(setup["mailbox"]["id"]),
            "to": setup["client_address"],
            "subject": "Hello {{ client.nmae }}",
            "body": "text",
        },
        headers={"x-csrftoken": csrf_token(as_admin)},
    )
    assert response.status_code == 422
    assert 'id="error-subject"' in response.text
    assert "client.nmae" in response.text or "nmae" in response.text
    assert await OutgoingMessage.count() == 0


async def test_recipients_come_from_the_clients_contacts(
    as_admin: Any, setup: dict[str, Any]
) -> None:
    response = await as_admin.post(
        f"/p/mail/clients/{setup['client_id']}/send",
        data={
            "mailbox": str(setup["mailbox"]["id"]),
            "to": "stranger@elsewhere.example.com",
            "subject": "Hi",
            "body": "text",
        },
        headers={"x-csrftoken": csrf_token(as_admin)},
    )
    assert response.status_code == 422
    assert 'id="error-to"' in response.text
    assert await OutgoingMessage.count() == 0


async def test_template_fills_the_compose_form(as_admin: Any, setup: dict[str, Any]) -> None:
    await MailTemplate.insert(
        MailTemplate(
            name="Offer", subject="Offer for {{ client.name }}", body="Hi", updated_at=utcnow()
        )
    )
    template = await MailTemplate.select().first()
    page = await as_admin.get(
        f"/p/mail/clients/{setup['client_id']}/compose", params={"template": template["id"]}
    )
    assert "Offer for {{ client.name }}" in page.text
    preview = await as_admin.post(
        f"/p/mail/clients/{setup['client_id']}/compose/preview",
        data={
            "mailbox": str(setup["mailbox"]["id"]),
            "to": setup["client_address"],
            "subject": template["subject"],
            "body": "Hi {{ contact.name }}{{ client.name }}",
        },
        headers={"x-csrftoken": csrf_token(as_admin)},
    )
    assert "Offer for Chairs Ltd" in preview.text and "Hi Chairs Ltd" in preview.text


async def _queue(setup: dict[str, Any], admin: dict[str, Any]) -> int:
    draft = await compose.validate(
        {
            "mailbox": setup["mailbox"]["id"],
            "to": setup["client_address"],
            "subject": "Status check",
            "body": "body",
        },
        admin,
        setup["client_id"],
    )
    return await compose.queue(draft, admin)


async def _row(outgoing_id: int) -> dict[str, Any]:
    return await OutgoingMessage.select().where(OutgoingMessage.id == outgoing_id).first()


async def test_auth_failure_is_failed_with_its_reason_and_retried_by_hand(
    as_admin: Any, setup: dict[str, Any], admin: dict[str, Any], relay: Any, dovecot: Any
) -> None:
    relay.mode = "auth_fail"
    outgoing_id = await _queue(setup, admin)
    assert await compose.deliver(outgoing_id) == FAILED
    row = await _row(outgoing_id)
    assert row["status"] == FAILED and "535" in row["error"] and "login" in row["error"]
    page = await as_admin.get("/p/mail/outbox")
    assert "failed" in page.text and "535" in page.text and "Retry" in page.text

    relay.mode = "ok"
    retried = await as_admin.post(
        f"/p/mail/outbox/{outgoing_id}/retry",
        headers={"x-csrftoken": csrf_token(as_admin)},
        follow_redirects=False,
    )
    assert retried.status_code == 303
    assert (await _row(outgoing_id))["status"] == QUEUED
    assert await compose.deliver(outgoing_id) == SENT
    assert len(fetch_all(dovecot, setup["client_address"])) == 1


async def test_refused_relay_is_a_permanent_failure(
    setup: dict[str, Any], admin: dict[str, Any], relay: Any
) -> None:
    relay.mode = "refuse"
    outgoing_id = await _queue(setup, admin)
    assert await compose.deliver(outgoing_id) == FAILED
    assert "554" in (await _row(outgoing_id))["error"]


async def test_temporary_failures_are_retried_with_backoff_then_given_up(
    setup: dict[str, Any], admin: dict[str, Any], relay: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(compose, "MAX_ATTEMPTS", 2)
    relay.mode = "tempfail"
    outgoing_id = await _queue(setup, admin)
    before = utcnow()
    assert await compose.deliver(outgoing_id) == QUEUED
    row = await _row(outgoing_id)
    assert row["attempts"] == 1 and "451" in row["error"]
    from core.services.common import as_utc

    assert as_utc(row["next_attempt_at"]) >= before + compose.backoff(1)
    assert await compose.deliver(outgoing_id) is None  # not due yet: nothing happens
    await OutgoingMessage.update({OutgoingMessage.next_attempt_at: utcnow()}).where(
        OutgoingMessage.id == outgoing_id
    )
    assert await compose.deliver(outgoing_id) == FAILED  # second and last attempt
    row = await _row(outgoing_id)
    assert row["attempts"] == 2 and row["status"] == FAILED and "451" in row["error"]
    assert relay.received == []


async def test_a_stalled_server_times_out_and_is_retried(
    setup: dict[str, Any], admin: dict[str, Any], relay: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(smtp, "TIMEOUT_SECONDS", 0.5)
    relay.mode = "stall"
    relay.stall_seconds = 2.0
    outgoing_id = await _queue(setup, admin)
    started = time.monotonic()
    assert await compose.deliver(outgoing_id) == QUEUED
    assert time.monotonic() - started < 2.0
    assert "did not answer in time" in (await _row(outgoing_id))["error"]


async def test_connection_refused_is_retried(
    dovecot: Any, relay: Any, admin: dict[str, Any]
) -> None:
    mailbox = await sending_mailbox(dovecot, relay, admin["id"], smtp_port=free_port())
    draft = compose.Draft(
        mailbox=mailbox, client_id=None, to=["x@crm-test.example.com"], cc=[], subject="s", body="b"
    )
    outgoing_id = await compose.queue(draft, admin)
    assert await compose.deliver(outgoing_id) == QUEUED
    assert "refused the connection" in (await _row(outgoing_id))["error"]


async def test_the_job_retries_with_backoff_until_the_server_recovers(
    setup: dict[str, Any], admin: dict[str, Any], relay: Any, monkeypatch: Any
) -> None:
    """Through the real queue and worker: a failure is retried by a delayed job."""
    from core.jobs import get_job_broker
    from core.jobs.worker import EmbeddedWorker

    monkeypatch.setattr(compose, "BACKOFF_SECONDS", 0.3)
    relay.mode = "tempfail"
    worker = EmbeddedWorker(get_job_broker(), worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        outgoing_id = await _queue(setup, admin)
        deadline = time.monotonic() + 20
        while not (await _row(outgoing_id))["error"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # until the first attempt has failed
        relay.mode = "ok"
        while (await _row(outgoing_id))["status"] != SENT and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        worker.stop()
    row = await _row(outgoing_id)
    assert row["status"] == SENT, row
    assert row["attempts"] >= 2
    assert len(relay.messages_to(setup["client_address"])) == 1


async def test_stale_claim_is_reported_not_resent(
    setup: dict[str, Any], admin: dict[str, Any], relay: Any
) -> None:
    outgoing_id = await _queue(setup, admin)
    await OutgoingMessage.update(
        {
            OutgoingMessage.status: "sending",
            OutgoingMessage.claimed_at: utcnow() - compose.STALE_AFTER * 2,
        }
    ).where(OutgoingMessage.id == outgoing_id)
    result = await compose.sweep()
    assert result["interrupted"] == 1
    row = await _row(outgoing_id)
    assert row["status"] == FAILED and "Interrupted" in row["error"]
    assert relay.received == []


async def test_a_manager_cannot_send_from_someone_elses_mailbox(
    as_manager: Any, manager: dict[str, Any], setup: dict[str, Any]
) -> None:
    own = await clients.create_client(
        {"name": "Mine", "emails": "mine@client-test.example.com", "responsible": manager["id"]},
        manager["id"],
    )
    response = await as_manager.post(
        f"/p/mail/clients/{own}/send",
        data={
            "mailbox": str(setup["mailbox"]["id"]),
            "to": "mine@client-test.example.com",
            "subject": "s",
            "body": "b",
        },
        headers={"x-csrftoken": csrf_token(as_manager)},
    )
    assert response.status_code == 422 and 'id="error-mailbox"' in response.text
    other = await as_manager.get(f"/p/mail/clients/{setup['client_id']}/compose")
    assert other.status_code == 404


async def test_templates_page_checks_variables_and_needs_its_permission(
    as_admin: Any, client: Any, manager: dict[str, Any]
) -> None:
    token = {"x-csrftoken": csrf_token(as_admin)}
    assert (await as_admin.get("/p/mail/templates/new")).status_code == 200
    bad = await as_admin.post(
        "/p/mail/templates",
        data={"name": "Offer", "subject": "For {{ client.title }}", "body": "x"},
        headers=token,
    )
    assert bad.status_code == 422 and 'id="error-subject"' in bad.text
    assert await MailTemplate.count() == 0
    good = await as_admin.post(
        "/p/mail/templates",
        data={"name": "Offer", "subject": "For {{ client.name }}", "body": "{{ deal.title }}"},
        headers=token,
        follow_redirects=False,
    )
    assert good.status_code == 303
    listing = await as_admin.get("/p/mail/templates")
    assert "Offer" in listing.text and "client.name" in listing.text
    for page in ("/p/mail/mailings", "/p/mail/mailings/new", "/p/mail/segments/new?tag=x"):
        assert (await as_admin.get(page)).status_code == 200, page

    from tests.support import login

    client.cookies.clear()
    await login(client, "manager", "manager-password")
    assert (await client.get("/p/mail/templates")).status_code == 403
    assert (await client.get("/p/mail/outbox")).status_code == 200
    assert (await client.get("/p/mail/mailings")).status_code == 200


@pytest.mark.parametrize("security", ["starttls", "ssl"])
async def test_sends_over_starttls_and_ssl(
    security: str, db: None, admin: dict[str, Any], dovecot: Any, tmp_path: Any, monkeypatch: Any
) -> None:
    """A relay with a certificate the client is told to trust (SSL_CERT_FILE)."""
    from plugins.mail.tests.smtp_relay import SmtpRelay, self_signed_tls

    context, cert = self_signed_tls(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    tls_relay = SmtpRelay(tls_context=context, implicit_tls=security == "ssl").start()
    try:
        mailbox = await sending_mailbox(dovecot, tls_relay, admin["id"])
        await Mailbox.update({Mailbox.smtp_security: security}).where(Mailbox.id == mailbox["id"])
        mailbox["smtp_security"] = security
        draft = compose.Draft(
            mailbox=mailbox,
            client_id=None,
            to=["tls@crm-test.example.com"],
            cc=[],
            subject="over TLS",
            body="b",
        )
        outgoing_id = await compose.queue(draft, admin)
        assert await compose.deliver(outgoing_id) == SENT, (await _row(outgoing_id))["error"]
        assert len(tls_relay.messages_to("tls@crm-test.example.com")) == 1
        monkeypatch.delenv("SSL_CERT_FILE")  # an untrusted certificate is refused
        refused = await compose.queue(draft, admin)
        assert await compose.deliver(refused) == FAILED
        assert "TLS failed" in (await _row(refused))["error"]
    finally:
        tls_relay.stop()
