"""Fixtures of the mail plugin's tests: a private Dovecot for the whole session and
mailboxes in the CRM pointing at fresh accounts on it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from plugins.mail.tests.dovecot import Dovecot
from plugins.mail.tests.smtp_relay import relay, relay_server  # noqa: F401 (the SMTP relay)


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    server = Dovecot.start()
    yield server
    server.stop()


MakeMailbox = Callable[..., Awaitable[tuple[int, str]]]


@pytest.fixture
def make_mailbox(dovecot: Dovecot, db: None) -> MakeMailbox:
    """A CRM mailbox on a new Dovecot account: returns (mailbox id, login)."""

    async def make(
        owner: dict[str, Any] | None = None, kind: str = "personal", **overrides: Any
    ) -> tuple[int, str]:
        from core.sealed import seal
        from core.services.common import utcnow
        from plugins.mail.tables import PLAIN, Mailbox

        login = overrides.pop("login", None) or dovecot.add_user()
        values: dict[str, Any] = {
            "name": login,
            "email": login,
            "kind": kind,
            "owner": owner["id"] if owner and kind == "personal" else None,
            "imap_host": dovecot.host,
            "imap_port": dovecot.port,
            "imap_security": PLAIN,
            "imap_user": login,
            "imap_password_sealed": seal(dovecot.users[login]),
            "smtp_host": "",
            "created_at": utcnow(),
            **overrides,
        }
        rows = await Mailbox.insert(Mailbox(**values)).returning(Mailbox.id)
        return int(rows[0]["id"]), login

    return make


async def make_client(owner: dict[str, Any], name: str, *emails: str) -> int:
    """A client owned by ``owner`` with these e-mail addresses (through the core service)."""
    from core import access
    from core.services.clients import create_client

    with access.acting_as(access.SYSTEM):
        return await create_client(
            {"name": name, "responsible": owner["id"], "emails": "\n".join(emails)}, owner["id"]
        )


def make_message(
    subject: str,
    sender: str = "ivan@acme-corp.ru",
    to: str = "me@example.test",
    message_id: str | None = None,
    body: str = "Hello from the client.",
    date: str = "Mon, 16 Nov 2026 10:00:00 +0300",
    headers: str = "",
) -> bytes:
    import uuid

    mid = message_id or f"<{uuid.uuid4().hex}@acme-corp.ru>"
    return (
        f"From: Ivan <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {date}\r\n"
        f"Message-ID: {mid}\r\nMIME-Version: 1.0\r\n{headers}"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()
