"""Through HTTP: connect a mailbox, mail shows on the right card, Unsorted, viewing."""

from __future__ import annotations

import re
from typing import Any

from plugins.mail.tests.conftest import MakeMailbox, make_client, make_message
from plugins.mail.tests.dovecot import Dovecot
from tests.support import csrf_token


def form(http: Any, **fields: Any) -> dict[str, Any]:
    return {"_csrf_token": csrf_token(http), **fields}


async def test_connect_mailbox_test_connection_and_sealed_password(
    dovecot: Dovecot, as_manager: Any, manager: dict[str, Any]
) -> None:
    from plugins.mail.tables import Mailbox

    login = dovecot.add_user()
    settings = {
        "name": "My mail",
        "email": login,
        "kind": "personal",
        "imap_host": dovecot.host,
        "imap_port": dovecot.port,
        "imap_security": "none",
        "imap_user": login,
        "imap_password": "wrong",
        "smtp_host": "",
    }
    bad = await as_manager.post("/p/mail/mailboxes/test", data=form(as_manager, **settings))
    assert bad.status_code == 200
    assert "IMAP login refused" in bad.text and "✗" in bad.text
    refused = await as_manager.post(
        "/p/mail/mailboxes/test", data=form(as_manager, **{**settings, "imap_port": 1})
    )
    assert "cannot connect" in refused.text

    settings["imap_password"] = dovecot.users[login]
    good = await as_manager.post("/p/mail/mailboxes/test", data=form(as_manager, **settings))
    assert "IMAP login OK" in good.text and "Sent folder: Sent" in good.text

    invalid = await as_manager.post(
        "/p/mail/mailboxes",
        data=form(as_manager, **{**settings, "email": "nope", "imap_port": "x"}),
    )
    assert invalid.status_code == 422
    assert 'id="error-email"' in invalid.text and 'id="error-imap_port"' in invalid.text
    assert await Mailbox.count() == 0, "nothing half-written"

    shared = await as_manager.post(
        "/p/mail/mailboxes", data=form(as_manager, **{**settings, "kind": "shared"})
    )
    assert shared.status_code == 422, "a manager cannot add a shared mailbox"

    created = await as_manager.post("/p/mail/mailboxes", data=form(as_manager, **settings))
    assert created.status_code in (200, 303), created.text
    row = await Mailbox.select().first()
    assert row["owner"] == manager["id"]
    assert dovecot.users[login] not in row["imap_password_sealed"]
    from core.sealed import unseal

    assert unseal(row["imap_password_sealed"]) == dovecot.users[login]
    edit = await as_manager.get(f"/p/mail/mailboxes/{row['id']}/edit")
    assert dovecot.users[login] not in edit.text and row["imap_password_sealed"] not in edit.text
    listing = await as_manager.get("/p/mail/mailboxes")
    assert "My mail" in listing.text


async def test_delivered_message_shows_on_the_right_card(
    dovecot: Dovecot,
    make_mailbox: MakeMailbox,
    as_manager: Any,
    manager: dict[str, Any],
    admin: dict[str, Any],
) -> None:
    from plugins.mail.sync.engine import sync_mailbox

    acme = await make_client(manager, "Acme", "ivan@acme-corp.ru")
    other = await make_client(admin, "Not mine", "petr@other-corp.ru")
    mailbox_id, login = await make_mailbox(manager)
    html = (
        "<p>Price list <b>attached</b><script>alert(1)</script>"
        '<img src="https://tracker.example/pixel.gif"></p>'
    )
    raw = make_message("Price request", to=login, body="Text part.").replace(
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nText part.\r\n",
        b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nText part.\r\n--b\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n" + html.encode() + b"\r\n--b--\r\n",
    )
    dovecot.deliver(login, raw)
    dovecot.deliver(login, make_message("Secret deal", sender="petr@other-corp.ru", to=login))
    await sync_mailbox(mailbox_id)

    card = await as_manager.get(f"/clients/{acme}")
    assert card.status_code == 200
    assert f"/p/mail/clients/{acme}/mail" in card.text, "the Mail tab is on the card"
    tab = await as_manager.get(f"/p/mail/clients/{acme}/mail")
    assert "Price request" in tab.text
    timeline = await as_manager.get(f"/clients/{acme}/timeline")
    assert "Price request" in timeline.text
    message_id = int(re.search(r"/p/mail/messages/(\d+)", tab.text).group(1))

    page = await as_manager.get(f"/p/mail/messages/{message_id}")
    assert page.status_code == 200 and 'sandbox="allow-popups' in page.text
    assert "Remote images are blocked" in page.text
    body = await as_manager.get(f"/p/mail/messages/{message_id}/body")
    assert "<b>attached</b>" in body.text
    assert "<script" not in body.text and "tracker.example" not in body.text
    csp = body.headers["content-security-policy"]
    assert "sandbox" in csp and "script-src" not in csp and "https:" not in csp
    shown = await as_manager.get(f"/p/mail/messages/{message_id}/body?images=1")
    assert "tracker.example/pixel.gif" in shown.text
    assert "https:" in shown.headers["content-security-policy"]

    # The other client's mail is in the manager's own mailbox: readable there,
    # but the other client's card and Mail tab stay closed.
    assert (await as_manager.get(f"/p/mail/clients/{other}/mail")).status_code == 404


async def test_visibility_of_mail_in_someone_elses_mailbox(
    dovecot: Dovecot,
    make_mailbox: MakeMailbox,
    as_manager: Any,
    manager: dict[str, Any],
    admin: dict[str, Any],
) -> None:
    from plugins.mail.sync.engine import sync_mailbox
    from plugins.mail.tables import MailMessage

    await make_client(admin, "Admin's client", "boss@big-corp.ru")
    mailbox_id, login = await make_mailbox(admin)
    dovecot.deliver(login, make_message("Confidential", sender="boss@big-corp.ru", to=login))
    dovecot.deliver(login, make_message("Unmatched private", sender="x@nowhere.example", to=login))
    await sync_mailbox(mailbox_id)

    for row in await MailMessage.select(MailMessage.id):
        response = await as_manager.get(f"/p/mail/messages/{row['id']}")
        assert response.status_code == 404
    unsorted = await as_manager.get("/p/mail/unsorted")
    assert "Unmatched private" not in unsorted.text


async def test_unsorted_create_client_and_link_are_remembered(
    dovecot: Dovecot, make_mailbox: MakeMailbox, as_manager: Any, manager: dict[str, Any]
) -> None:
    from plugins.mail.sync.engine import sync_mailbox
    from plugins.mail.tables import MailMessage

    existing = await make_client(manager, "Existing Ltd", "office@existing.example")
    mailbox_id, login = await make_mailbox(manager)
    dovecot.deliver(login, make_message("From a new lead", sender="lead@gmail.com", to=login))
    dovecot.deliver(login, make_message("Private address", sender="ceo.home@mail.ru", to=login))
    await sync_mailbox(mailbox_id)

    page = await as_manager.get("/p/mail/unsorted")
    assert "From a new lead" in page.text and "Private address" in page.text
    ids = {r["subject"]: r["id"] for r in await MailMessage.select()}

    created = await as_manager.post(
        f"/p/mail/unsorted/{ids['From a new lead']}/create-client",
        data=form(as_manager, address="lead@gmail.com"),
    )
    assert created.status_code in (200, 303)
    from core.tables import Client

    lead = await Client.select().where(Client.name == "Ivan").first()
    assert lead is not None and lead["responsible"] == manager["id"]

    search = await as_manager.get(
        f"/p/mail/unsorted/clients?message={ids['Private address']}&address=ceo.home@mail.ru&q=Existing"
    )
    assert "Existing Ltd" in search.text
    linked = await as_manager.post(
        f"/p/mail/unsorted/{ids['Private address']}/link",
        data=form(as_manager, address="ceo.home@mail.ru", client=str(existing)),
    )
    assert linked.status_code in (200, 303)
    assert "Private address" in (await as_manager.get(f"/p/mail/clients/{existing}/mail")).text
    assert "Nothing unsorted" in (await as_manager.get("/p/mail/unsorted")).text

    # Later mail from the linked address goes straight to the client.
    dovecot.deliver(login, make_message("Second private", sender="ceo.home@mail.ru", to=login))
    await sync_mailbox(mailbox_id)
    assert "Second private" in (await as_manager.get(f"/p/mail/clients/{existing}/mail")).text


async def test_large_attachment_download_is_streamed(
    dovecot: Dovecot, make_mailbox: MakeMailbox, as_manager: Any, manager: dict[str, Any]
) -> None:
    from email.message import EmailMessage

    from plugins.mail.sync.engine import sync_mailbox
    from plugins.mail.tables import MailAttachment

    await make_client(manager, "Acme", "ivan@acme-corp.ru")
    mailbox_id, login = await make_mailbox(manager)
    payload = b"0123456789abcdef" * (5 * 1024 * 1024 // 16)
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "ivan@acme-corp.ru", login, "big file"
    msg.set_content("see attached")
    msg.add_attachment(payload, maintype="application", subtype="zip", filename="archive.zip")
    dovecot.deliver(login, msg.as_bytes())
    await sync_mailbox(mailbox_id)
    row = await MailAttachment.select().first()

    response = await as_manager.get(f"/p/mail/messages/{row['message']}/attachments/{row['id']}")
    assert response.status_code == 200
    assert response.content == payload
    assert "attachment" in response.headers["content-disposition"]


async def test_mailbox_list_status_and_sync_now(
    dovecot: Dovecot, make_mailbox: MakeMailbox, as_manager: Any, manager: dict[str, Any]
) -> None:
    from plugins.mail.sync.engine import sync_mailbox

    own, login = await make_mailbox(manager, name="Own box")
    shared, _ = await make_mailbox(kind="shared", name="Shared sales")
    dovecot.deliver(login, make_message("hello", to=login))
    await sync_mailbox(own)

    listing = await as_manager.get("/p/mail/mailboxes")
    assert "Own box" in listing.text and "Shared sales" not in listing.text
    assert f"/p/mail/mailboxes/{own}/edit" in listing.text and "Synced" in listing.text
    status = await as_manager.get(f"/p/mail/mailboxes/{own}/status")
    assert status.status_code == 200 and "Sync now" in status.text
    queued = await as_manager.post(
        f"/p/mail/mailboxes/{own}/sync", headers={"x-csrftoken": csrf_token(as_manager)}
    )
    assert queued.status_code == 200 and "queued" in queued.text and "every 2s" in queued.text
    for path in (f"/p/mail/mailboxes/{shared}/status", f"/p/mail/mailboxes/{shared}/edit"):
        assert (await as_manager.get(path)).status_code == 404
    denied = await as_manager.post(
        f"/p/mail/mailboxes/{shared}/sync", headers={"x-csrftoken": csrf_token(as_manager)}
    )
    assert denied.status_code == 404
