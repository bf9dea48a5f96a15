"""Talking to the mailbox's servers: SMTP to send, IMAP APPEND to keep a copy in Sent.

stdlib ``smtplib``/``imaplib`` run in a worker thread: both are mature, speak
SSL and STARTTLS, and a blocking call in a thread is easy to time out. Every failure
becomes a `DeliveryError` that says in words what went wrong and whether trying
again later can help (a timeout can, a refused recipient cannot).
"""

from __future__ import annotations

import imaplib
import smtplib
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any

from core.sealed import SealError, unseal
from plugins.mail.tables import SSL, STARTTLS

TIMEOUT_SECONDS = 30.0


class DeliveryError(Exception):
    """A send or append that did not work; ``transient`` failures are retried."""

    def __init__(self, reason: str, *, transient: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    security: str
    user: str
    password: str
    timeout: float = TIMEOUT_SECONDS


def _password(sealed: str) -> str:
    try:
        return unseal(sealed) if sealed else ""
    except SealError as exc:
        raise DeliveryError(str(exc), transient=False) from None


def smtp_server(mailbox: dict[str, Any], timeout: float | None = None) -> Server:
    """The mailbox's SMTP side; the IMAP login is used when no separate one is set."""
    return Server(
        host=mailbox["smtp_host"],
        port=int(mailbox["smtp_port"]),
        security=mailbox["smtp_security"],
        user=mailbox["smtp_user"] or mailbox["imap_user"],
        password=_password(mailbox["smtp_password_sealed"] or mailbox["imap_password_sealed"]),
        timeout=timeout or TIMEOUT_SECONDS,
    )


def imap_server(mailbox: dict[str, Any], timeout: float | None = None) -> Server:
    return Server(
        host=mailbox["imap_host"],
        port=int(mailbox["imap_port"]),
        security=mailbox["imap_security"],
        user=mailbox["imap_user"],
        password=_password(mailbox["imap_password_sealed"]),
        timeout=timeout or TIMEOUT_SECONDS,
    )


def _code_reason(code: int, message: bytes | str) -> str:
    text = message.decode(errors="replace") if isinstance(message, bytes) else str(message)
    return f"{code} {text}".strip()


def _classify(exc: BaseException) -> DeliveryError:
    """Why a send failed, in words the sender understands, and whether to retry."""
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return DeliveryError(
            "SMTP login failed: " + _code_reason(exc.smtp_code, exc.smtp_error),
            transient=exc.smtp_code < 500,
        )
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        details = "; ".join(
            f"{address}: {_code_reason(code, message)}"
            for address, (code, message) in exc.recipients.items()
        )
        return DeliveryError(
            "recipients refused: " + details, transient=all(400 <= c < 500 for c in codes)
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        return DeliveryError(
            "SMTP server refused: " + _code_reason(exc.smtp_code, exc.smtp_error),
            transient=400 <= exc.smtp_code < 500,
        )
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return DeliveryError(f"SMTP server does not support this: {exc}", transient=False)
    if isinstance(exc, smtplib.SMTPServerDisconnected) and isinstance(
        exc.__context__, TimeoutError | socket.timeout
    ):
        return _classify(exc.__context__)  # smtplib words a timeout as a disconnect
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return DeliveryError(f"SMTP server closed the connection: {exc}", transient=True)
    if isinstance(exc, ssl.SSLError):
        return DeliveryError(f"TLS failed: {exc.reason or exc}", transient=False)
    if isinstance(exc, TimeoutError | socket.timeout):
        return DeliveryError("the mail server did not answer in time", transient=True)
    if isinstance(exc, ConnectionRefusedError):
        return DeliveryError("the mail server refused the connection", transient=True)
    if isinstance(exc, OSError):
        return DeliveryError(f"cannot reach the mail server: {exc}", transient=True)
    return DeliveryError(f"{type(exc).__name__}: {exc}", transient=False)


class SmtpSession:
    """One logged-in SMTP connection; a mailing sends many messages through it."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.smtp: smtplib.SMTP | None = None

    def open(self) -> None:
        server = self.server
        try:
            context = ssl.create_default_context()
            if server.security == SSL:
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    server.host, server.port, timeout=server.timeout, context=context
                )
            else:
                smtp = smtplib.SMTP(server.host, server.port, timeout=server.timeout)
                if server.security == STARTTLS:
                    smtp.starttls(context=context)
            if server.user:
                smtp.login(server.user, server.password)
        except BaseException as exc:
            raise _classify(exc) from exc
        self.smtp = smtp

    def send(self, sender: str, recipients: list[str], raw: bytes) -> None:
        if self.smtp is None:
            self.open()
        assert self.smtp is not None
        try:
            refused = self.smtp.sendmail(sender, recipients, raw)
        except BaseException as exc:
            error = _classify(exc)
            if error.transient:
                self.close()  # the connection may be in any state: start afresh
            raise error from exc
        if refused:  # some recipients took it, some did not: say which
            raise _classify(smtplib.SMTPRecipientsRefused(refused))

    def close(self) -> None:
        smtp, self.smtp = self.smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()


def send_message(server: Server, sender: str, recipients: list[str], raw: bytes) -> None:
    """Send one message (blocking: call it from a thread)."""
    session = SmtpSession(server)
    try:
        session.send(sender, recipients, raw)
    finally:
        session.close()


def append_to_sent(server: Server, raw: bytes, configured_folder: str = "") -> str:
    """APPEND the sent message to the Sent folder, flagged \\Seen; returns the folder.

    The folder is the configured one, else the one the server flags \\Sent
    (SPECIAL-USE, found by the sync's session), else "Sent", created if missing.
    """
    from plugins.mail.sync import imap

    settings = imap.ImapSettings(
        server.host, server.port, server.security, server.user, server.password
    )
    try:
        with imap.Session(settings) as session:
            folder = configured_folder or session.detect_sent() or "Sent"
            quoted = imap._quote(folder)
            when = imaplib.Time2Internaldate(time.time())
            status, detail = session.conn.append(quoted, r"(\Seen)", when, raw)
            if status != "OK":
                session.conn.create(quoted)
                status, detail = session.conn.append(quoted, r"(\Seen)", when, raw)
    except imap.ImapError as exc:
        raise DeliveryError(str(exc), transient=True) from exc
    except (OSError, imaplib.IMAP4.error) as exc:
        raise DeliveryError(f"IMAP APPEND failed: {exc}", transient=True) from exc
    if status != "OK":
        raise DeliveryError(f"IMAP APPEND to {folder} failed: {detail!r}", transient=True)
    return imap.decode_folder(folder)
