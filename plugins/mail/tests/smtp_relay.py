"""An SMTP relay for the tests: aiosmtpd on 127.0.0.1 that requires AUTH and hands
every accepted message to a delivery callback (the private Dovecot's INBOX).

It can be told to misbehave, so the failure paths meet a real server:
``refuse`` (554 at MAIL FROM), ``tempfail`` (451 at DATA), ``auth_fail`` (535 for
any password) and ``stall`` (DATA never answers before the client's timeout).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from plugins.mail.tests.dovecot import free_port, write_self_signed

USER = "relay-user"
PASSWORD = "relay-password"

MODES = ("ok", "refuse", "tempfail", "auth_fail", "stall")


@dataclass
class Received:
    mail_from: str
    recipients: list[str]
    raw: bytes


def self_signed_tls(folder: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context for 127.0.0.1 and the certificate a client must trust."""
    cert_path = folder / "relay-cert.pem"
    key_path = folder / "relay-key.pem"
    write_self_signed(cert_path, key_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path


class _Handler:
    def __init__(self, relay: SmtpRelay) -> None:
        self.relay = relay

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.relay.mode == "refuse":
            return "554 5.7.1 Relay refused by policy"
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.relay.mode == "tempfail":
            return "451 4.3.0 Try again later"
        if self.relay.mode == "stall":
            await asyncio.sleep(self.relay.stall_seconds)
            return "451 4.4.2 Stalled"
        raw = envelope.original_content or b""
        received = Received(str(envelope.mail_from), list(envelope.rcpt_tos), raw)
        if self.relay.deliver is not None:
            # IMAP APPEND is blocking: keep the relay's loop answering other clients.
            loop = asyncio.get_running_loop()
            for recipient in received.recipients:
                await loop.run_in_executor(None, self.relay.deliver, recipient, raw)
        with self.relay.lock:
            self.relay.received.append(received)
        return "250 2.0.0 Message accepted"


class SmtpRelay:
    """Start with `start()`, stop with `stop()`; `received` holds what was accepted."""

    def __init__(
        self,
        deliver: Callable[[str, bytes], Any] | None = None,
        *,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
    ) -> None:
        self.deliver = deliver
        self.mode = "ok"
        self.stall_seconds = 5.0
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.port = free_port()
        self.host = "127.0.0.1"
        self.auth_attempts = 0
        kwargs: dict[str, Any] = {
            "authenticator": self._authenticate,
            "auth_required": True,
            "auth_require_tls": False,
        }
        if implicit_tls:
            kwargs["ssl_context"] = tls_context
        elif tls_context is not None:
            kwargs["tls_context"] = tls_context
        self._controller = Controller(_Handler(self), hostname=self.host, port=self.port, **kwargs)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        self.auth_attempts += 1
        if self.mode == "auth_fail" or not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = data.login.decode() == USER and data.password.decode() == PASSWORD
        return AuthResult(success=ok)

    def start(self) -> SmtpRelay:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def reset(self) -> None:
        self.mode = "ok"
        with self.lock:
            self.received.clear()

    def messages_to(self, address: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if address in r.recipients]


# --- pytest fixtures (imported by the outgoing tests) -------------------------------------


@pytest.fixture(scope="session")
def relay_server(dovecot: Any) -> Iterator[SmtpRelay]:
    """One relay for the session, delivering into the private Dovecot's INBOXes."""

    def deliver(recipient: str, raw: bytes) -> None:
        if recipient in dovecot.users:
            dovecot.deliver(recipient, raw)

    server = SmtpRelay(deliver).start()
    yield server
    server.stop()


@pytest.fixture
def relay(relay_server: SmtpRelay) -> Iterator[SmtpRelay]:
    """The session's relay, well-behaved and empty at the start of each test."""
    relay_server.reset()
    yield relay_server
    relay_server.reset()
