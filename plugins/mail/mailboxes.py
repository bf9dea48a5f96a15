"""Mailboxes: validating and saving their settings, who may see them, testing a login.

Passwords are sealed (core.sealed) before they reach the database and never sent back
to the browser: an empty password field on edit keeps the stored one.
"""

from __future__ import annotations

import asyncio
import smtplib
import socket
import ssl
from dataclasses import dataclass
from datetime import date
from typing import Any

from core import access
from core.i18n import _
from core.sealed import SealError, seal, unseal
from core.services.common import NotFound, utcnow, write
from plugins.mail.sync.imap import ImapError, ImapSettings, Session, decode_folder
from plugins.mail.tables import PERSONAL, PLAIN, SHARED, SSL, STARTTLS, Mailbox

MANAGE = "mail.mailboxes.manage"
VIEW = "mail.view"
SHARED_ACCESS = "mail.shared"
SECURITY_MODES = (SSL, STARTTLS, PLAIN)
TIMEOUT = 20.0


class MailboxInvalid(ValueError):
    """Bad mailbox settings: ``errors`` maps each form field to its message."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


FIELDS = [
    "name",
    "email",
    "kind",
    "imap_host",
    "imap_port",
    "imap_security",
    "imap_user",
    "imap_password",
    "smtp_host",
    "smtp_port",
    "smtp_security",
    "smtp_user",
    "smtp_password",
    "inbox_folder",
    "sent_folder",
    "sync_since",
    "sync_enabled",
]


def _port(value: Any, name: str, errors: dict[str, str]) -> int:
    try:
        port = int(str(value).strip())
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        errors[name] = _("a port number from 1 to 65535")
    return port


def validate(data: dict[str, Any], existing: dict[str, Any] | None) -> dict[str, Any]:
    """Column values for a mailbox from form data; MailboxInvalid lists every problem."""
    errors: dict[str, str] = {}
    text = {k: str(data.get(k) or "").strip() for k in FIELDS}
    values: dict[str, Any] = {
        "name": text["name"][:128],
        "email": text["email"].lower(),
        "kind": text["kind"] or PERSONAL,
        "imap_host": text["imap_host"],
        "imap_port": _port(data.get("imap_port") or 993, "imap_port", errors),
        "imap_security": text["imap_security"] or SSL,
        "imap_user": text["imap_user"] or text["email"],
        "smtp_host": text["smtp_host"],
        "smtp_port": _port(data.get("smtp_port") or 465, "smtp_port", errors),
        "smtp_security": text["smtp_security"] or SSL,
        "smtp_user": text["smtp_user"] or text["imap_user"] or text["email"],
        "inbox_folder": text["inbox_folder"],
        "sent_folder": text["sent_folder"],
        "sync_enabled": str(data.get("sync_enabled", "on")).lower() in ("on", "true", "1", "yes"),
    }
    if "@" not in values["email"] or len(values["email"]) > 254:
        errors["email"] = _("an e-mail address like sales@example.com")
    if not values["name"]:
        values["name"] = values["email"]
    if values["kind"] not in (PERSONAL, SHARED):
        errors["kind"] = _("personal or shared")
    if not values["imap_host"]:
        errors["imap_host"] = _("the IMAP server, e.g. imap.yandex.ru")
    for key in ("imap_security", "smtp_security"):
        if values[key] not in SECURITY_MODES:
            errors[key] = _("SSL, STARTTLS or none")
    if text["sync_since"]:
        try:
            values["sync_since"] = date.fromisoformat(text["sync_since"])
        except ValueError:
            errors["sync_since"] = _("a date like 2026-01-31")
    else:
        values["sync_since"] = None
    for secret in ("imap_password", "smtp_password"):
        if text[secret]:
            values[f"{secret}_sealed"] = seal(text[secret])
        elif existing is None and secret == "imap_password":
            errors[secret] = _("the password (or app password) of the mailbox")
    if errors:
        raise MailboxInvalid(errors)
    if "smtp_password_sealed" not in values and existing is None:
        values["smtp_password_sealed"] = values.get("imap_password_sealed", "")
    return values


async def create(data: dict[str, Any], actor_id: int) -> int:
    """A new mailbox; a shared one needs ``mail.mailboxes.manage``."""
    values = validate(data, None)
    me = access.current()
    if values["kind"] == SHARED and not me.can(MANAGE):
        raise MailboxInvalid({"kind": _("only an administrator of mailboxes can add a shared one")})
    owner = actor_id if values["kind"] == PERSONAL else None
    async with write():
        rows = await Mailbox.insert(
            Mailbox(**values, owner=owner, created_by=actor_id, created_at=utcnow())
        ).returning(Mailbox.id)
    return int(rows[0]["id"])


async def update(mailbox_id: int, data: dict[str, Any]) -> None:
    existing = await get_manageable(mailbox_id)
    values = validate(data, existing)
    if values["kind"] != existing["kind"] and not access.current().can(MANAGE):
        raise MailboxInvalid({"kind": _("only an administrator of mailboxes can change this")})
    if values["kind"] == SHARED:
        values["owner"] = None
    elif existing["owner"] is None:
        values["owner"] = access.current().user_id
    async with write():
        await Mailbox.update({getattr(Mailbox, k): v for k, v in values.items()}).where(
            Mailbox.id == mailbox_id
        )


async def delete(mailbox_id: int) -> None:
    """Disconnect a mailbox; its messages stay on the clients' cards."""
    await get_manageable(mailbox_id)
    async with write():
        await Mailbox.delete().where(Mailbox.id == mailbox_id)


def _visible_condition() -> Any | None:
    """Mailboxes the user sees: own personal ones; shared with mail.shared; all for admins."""
    me = access.current()
    if me.can(MANAGE):
        return None
    condition: Any = Mailbox.owner == (me.user_id or 0)
    if me.can(SHARED_ACCESS):
        condition = condition | (Mailbox.kind == SHARED)
    return condition


async def visible_ids() -> list[int] | None:
    """Ids of the mailboxes the user may read (None: all of them)."""
    condition = _visible_condition()
    if condition is None:
        return None
    return [r["id"] for r in await Mailbox.select(Mailbox.id).where(condition)]


async def list_visible() -> list[dict[str, Any]]:
    query = Mailbox.select(
        *Mailbox.all_columns(exclude=[Mailbox.imap_password_sealed, Mailbox.smtp_password_sealed])
    )
    condition = _visible_condition()
    if condition is not None:
        query = query.where(condition)
    return await query.order_by(Mailbox.kind).order_by(Mailbox.name)


def can_manage(row: dict[str, Any]) -> bool:
    me = access.current()
    return me.can(MANAGE) or (row["owner"] is not None and row["owner"] == me.user_id)


async def get_readable(mailbox_id: int) -> dict[str, Any]:
    """A mailbox the user may see (its sync state), without its sealed passwords."""
    query = Mailbox.select(
        *Mailbox.all_columns(exclude=[Mailbox.imap_password_sealed, Mailbox.smtp_password_sealed])
    ).where(Mailbox.id == mailbox_id)
    condition = _visible_condition()
    row = await (query.where(condition) if condition is not None else query).first()
    if row is None:
        raise NotFound(mailbox_id)
    return row


async def get_manageable(mailbox_id: int) -> dict[str, Any]:
    """A mailbox the user may change: their own personal one, or any with MANAGE."""
    row = await Mailbox.select().where(Mailbox.id == mailbox_id).first()
    me = access.current()
    if row is None or not (
        me.can(MANAGE) or (row["owner"] is not None and row["owner"] == me.user_id)
    ):
        raise NotFound(mailbox_id)
    return row


@dataclass
class ConnectionCheck:
    imap_ok: bool
    imap_message: str
    smtp_ok: bool
    smtp_message: str

    @property
    def ok(self) -> bool:
        return self.imap_ok and self.smtp_ok


def _password(sealed: str, typed: str) -> str:
    if typed:
        return typed
    try:
        return unseal(sealed) if sealed else ""
    except SealError as exc:
        raise ImapError(str(exc)) from exc


def _check_imap(settings: ImapSettings, sent_folder: str) -> str:
    with Session(settings, timeout=TIMEOUT) as session:
        folders = [decode_folder(name) for name, _ in session.folders()]
        sent = sent_folder or session.detect_sent()
    sent_text = (
        f"Sent folder: {decode_folder(sent)}" if sent else "no Sent folder found: set it below"
    )
    return f"IMAP login OK ({len(folders)} folders; {sent_text})"


def check_smtp(host: str, port: int, security: str, user: str, password: str) -> str:
    """Log in to the SMTP server and quit; raises OSError/SMTPException with the reason."""
    context = ssl.create_default_context()
    server: smtplib.SMTP
    if security == SSL:
        server = smtplib.SMTP_SSL(host, port, timeout=TIMEOUT, context=context)
    else:
        server = smtplib.SMTP(host, port, timeout=TIMEOUT)
    try:
        server.ehlo()
        if security == STARTTLS:
            server.starttls(context=context)
            server.ehlo()
        if user:
            server.login(user, password)
    finally:
        try:
            server.quit()
        except (OSError, smtplib.SMTPException):
            server.close()
    return "SMTP login OK"


def _smtp_reason(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        detail = (
            exc.smtp_error.decode(errors="replace")
            if isinstance(exc.smtp_error, bytes)
            else exc.smtp_error
        )
        return f"SMTP login refused: {detail}"
    if isinstance(exc, socket.timeout | TimeoutError):
        return "the SMTP server did not answer in time"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    return f"SMTP failed: {exc}"


async def test_connection(data: dict[str, Any], existing: dict[str, Any] | None) -> ConnectionCheck:
    """Log in to IMAP and SMTP with the form's settings (stored passwords if left empty)."""
    imap_ok = smtp_ok = False
    sealed_imap = existing["imap_password_sealed"] if existing else ""
    sealed_smtp = existing["smtp_password_sealed"] if existing else ""
    try:
        settings = ImapSettings(
            host=str(data.get("imap_host") or "").strip(),
            port=int(data.get("imap_port") or 993),
            security=str(data.get("imap_security") or SSL),
            user=str(data.get("imap_user") or data.get("email") or "").strip(),
            password=_password(sealed_imap, str(data.get("imap_password") or "")),
        )
        imap_message = await asyncio.to_thread(
            _check_imap, settings, str(data.get("sent_folder") or "")
        )
        imap_ok = True
    except (ImapError, ValueError) as exc:
        imap_message = str(exc)
    host = str(data.get("smtp_host") or "").strip()
    if not host:
        smtp_ok = True  # receiving-only mailboxes are allowed
        smtp_message = _("no SMTP server set: this mailbox can receive but not send")
    else:
        try:
            password = str(data.get("smtp_password") or "") or _password(
                sealed_smtp or sealed_imap, str(data.get("imap_password") or "")
            )
            smtp_message = await asyncio.to_thread(
                check_smtp,
                host,
                int(data.get("smtp_port") or 465),
                str(data.get("smtp_security") or SSL),
                str(
                    data.get("smtp_user") or data.get("imap_user") or data.get("email") or ""
                ).strip(),
                password,
            )
            smtp_ok = True
        except (OSError, smtplib.SMTPException, ValueError, ImapError) as exc:
            smtp_message = _smtp_reason(exc)
    return ConnectionCheck(imap_ok, imap_message, smtp_ok, smtp_message)
