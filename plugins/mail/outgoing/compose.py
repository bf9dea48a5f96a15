"""Writing to a client: validate, build the message once, queue it, deliver it.

A message is built completely (headers, Message-ID, attachments) when it is queued
and kept as a file, so each retry sends the very same bytes. Delivery claims the row
(``queued`` -> ``sending``) in its own commit before talking to the server, so two
runs of the job never send it twice; every outcome is written back with its reason,
nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid
from pathlib import Path
from typing import Any

from core import access
from core.i18n import _
from core.runtime import get_runtime
from core.services import clients
from core.services.common import NotFound, as_utc, utcnow, write
from core.validation import FieldError, ValidationError, normalize_email
from plugins.mail.outgoing import smtp
from plugins.mail.outgoing.tables import FAILED, QUEUED, SENDING, SENT, OutgoingMessage
from plugins.mail.outgoing.templates_render import TemplateProblem, context_for, render
from plugins.mail.tables import SHARED, Mailbox

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
"""Tries of a message whose failure may pass (timeouts, 4xx) before it is failed."""
BACKOFF_SECONDS = 30
"""First retry after this long, doubling each time (30 s, 1 min, 2 min, 4 min)."""
STALE_AFTER = timedelta(minutes=10)
"""A claim older than this belongs to a job that died: the sweep reports it."""
SHARED_PERMISSION = "mail.shared"


def outbox_dir() -> Path:
    path = get_runtime().settings.data_dir / "mail" / "outbox"
    path.mkdir(parents=True, exist_ok=True)
    return path


def backoff(attempt: int) -> timedelta:
    return timedelta(seconds=BACKOFF_SECONDS * 2 ** max(attempt - 1, 0))


# --- who may send from where, to whom ---------------------------------------------------


async def usable_mailboxes(user: dict[str, Any]) -> list[dict[str, Any]]:
    """The user's own mailboxes, and the shared ones if their role may use shared mail."""
    condition = (Mailbox.owner == user["id"]) & (Mailbox.kind != SHARED)
    if access.current().can(SHARED_PERMISSION):
        condition = condition | (Mailbox.kind == SHARED)
    rows = await Mailbox.select().where(condition & (Mailbox.smtp_host != "")).order_by(Mailbox.id)
    return rows


async def usable_mailbox(user: dict[str, Any], mailbox_id: int) -> dict[str, Any]:
    for mailbox in await usable_mailboxes(user):
        if mailbox["id"] == mailbox_id:
            return mailbox
    raise NotFound(mailbox_id)


async def client_addresses(client_id: int) -> list[tuple[str, str]]:
    """(address, label) of the client and its contacts, as the user may see them."""
    client = await clients.get_client(client_id)
    found: dict[str, str] = dict.fromkeys(client.get("emails") or [], client["name"])
    for contact in await clients.list_contacts(client_id):
        for address in contact.get("emails") or []:
            found.setdefault(address, f"{contact['name']} ({client['name']})")
    return list(found.items())


async def message_for_reply(message_id: int, client_id: int) -> dict[str, Any]:
    """A stored message of this client's correspondence, with whom a reply goes to.

    NotFound unless the message is on this client's card and the user sees the client.
    """
    from plugins.mail.tables import MailMessage, MailMessageClient

    await clients.ensure_visible(client_id)
    linked = await MailMessageClient.exists().where(
        (MailMessageClient.message == message_id) & (MailMessageClient.client == client_id)
    )
    row = await MailMessage.select().where(MailMessage.id == message_id).first()
    if not linked or row is None:
        raise NotFound(message_id)
    row["sent_at"] = as_utc(row["sent_at"])
    references = row["references"]
    if isinstance(references, str):
        references = json.loads(references or "[]")
    row["references"] = [str(r) for r in references or []]
    addresses = [row["from_addr"], *_json_list(row["to_addrs"]), *_json_list(row["cc_addrs"])]
    own = {m["email"].lower() for m in await Mailbox.select(Mailbox.email)}
    row["addresses"] = [a for a in dict.fromkeys(a.lower() for a in addresses if a) if a not in own]
    # An answer to our own message goes to its recipients, otherwise to its sender.
    row["reply_to"] = (
        [a for a in _json_list(row["to_addrs"]) if a.lower() not in own]
        if row["from_addr"].lower() in own
        else [row["from_addr"].lower()]
    )
    return row


def _json_list(value: Any) -> list[str]:
    """Addresses from a JSON column: a list, or (SQLite) its text."""
    items = json.loads(value or "[]") if isinstance(value, str) else value or []
    return [str(item) for item in items]


# --- the draft ------------------------------------------------------------------------


@dataclass
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass
class Draft:
    """A validated message, ready to be built and queued."""

    mailbox: dict[str, Any]
    client_id: int | None
    to: list[str]
    cc: list[str]
    subject: str
    body: str
    in_reply_to: str = ""
    references: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)


def _addresses(raw: Any) -> list[str]:
    items = raw if isinstance(raw, list) else str(raw or "").replace(";", ",").split(",")
    result: list[str] = []
    for item in items:
        for part in str(item).split():
            address = normalize_email(part)
            if address not in result:
                result.append(address)
    return result


async def validate(
    data: dict[str, Any],
    user: dict[str, Any],
    client_id: int | None,
    attachments: list[Attachment] | None = None,
    allowed_extra: tuple[str, ...] = (),
) -> Draft:
    """Check a compose form; ValidationError names the field and what to fix.

    The subject and body are templates: they are rendered here with the client,
    contact, deal and user, so an unknown variable is reported next to its field.
    """
    errors: dict[str, str] = {}
    mailbox: dict[str, Any] | None = None
    try:
        mailbox = await usable_mailbox(user, int(data.get("mailbox") or 0))
    except (NotFound, ValueError):
        errors["mailbox"] = _("Choose a mailbox you may send from.")
    known = dict(await client_addresses(client_id)) if client_id is not None else {}
    to: list[str] = []
    cc: list[str] = []
    for name, target in (("to", to), ("cc", cc)):
        try:
            target += _addresses(data.get(name))
        except FieldError as exc:
            errors[name] = exc.message
    if not to and "to" not in errors:
        errors["to"] = _("Choose at least one recipient.")
    allowed = set(known) | set(allowed_extra)
    strangers = [a for a in to + cc if a not in allowed]
    if strangers and client_id is not None and not data.get("allow_other"):
        errors.setdefault(
            "to",
            _(
                "Not an address of this client or its contacts: %(list)s.",
                list=", ".join(strangers),
            ),
        )
    subject_text = str(data.get("subject") or "").strip()
    body_text = str(data.get("body") or "")
    if not subject_text:
        errors["subject"] = _("This field is required.")
    if not body_text.strip():
        errors["body"] = _("This field is required.")
    subject = body = ""
    if not errors.get("subject") or not errors.get("body"):
        deal_raw = str(data.get("deal") or "").strip()
        context = await context_for(
            client_id,
            user,
            contact_email=to[0] if to else "",
            deal_id=int(deal_raw) if deal_raw.isdigit() else None,
        )
        for name, text in (("subject", subject_text), ("body", body_text)):
            if errors.get(name):
                continue
            try:
                rendered = render(text, context)
            except TemplateProblem as exc:
                errors[name] = str(exc)
                continue
            if name == "subject":
                subject = " ".join(rendered.split())[:998]
            else:
                body = rendered
    limit = get_runtime().settings.max_upload_bytes
    if sum(len(a.data) for a in attachments or []) > limit:
        errors["attachments"] = _(
            "Attachments are larger than %(n)s MB together.",
            n=get_runtime().settings.max_upload_mb,
        )
    if errors:
        raise ValidationError(errors)
    assert mailbox is not None
    references = [r for r in str(data.get("references") or "").split() if r]
    return Draft(
        mailbox=mailbox,
        client_id=client_id,
        to=to,
        cc=cc,
        subject=subject,
        body=body,
        in_reply_to=" ".join(str(data.get("in_reply_to") or "").split())[:998],
        references=references,
        attachments=attachments or [],
    )


def sender_address(mailbox: dict[str, Any], user: dict[str, Any]) -> str:
    display = mailbox["name"] if mailbox["kind"] == SHARED else user.get("full_name") or ""
    return formataddr((display, mailbox["email"]))


def build_message(draft: Draft, user: dict[str, Any]) -> EmailMessage:
    message = EmailMessage()
    domain = draft.mailbox["email"].rpartition("@")[2] or "localhost"
    message["Message-ID"] = make_msgid(domain=domain)
    message["Date"] = format_datetime(utcnow())
    message["From"] = sender_address(draft.mailbox, user)
    message["To"] = ", ".join(draft.to)
    if draft.cc:
        message["Cc"] = ", ".join(draft.cc)
    message["Subject"] = draft.subject
    if draft.in_reply_to:
        message["In-Reply-To"] = draft.in_reply_to
        refs = [*draft.references]
        if draft.in_reply_to not in refs:
            refs.append(draft.in_reply_to)
        message["References"] = " ".join(refs)
    message.set_content(draft.body)
    for item in draft.attachments:
        maintype, _slash, subtype = (item.content_type or "application/octet-stream").partition("/")
        message.add_attachment(
            item.data,
            maintype=maintype or "application",
            subtype=subtype or "octet-stream",
            filename=item.filename,
        )
    return message


async def queue(draft: Draft, user: dict[str, Any]) -> int:
    """Store the built message and queue its delivery; returns the outgoing id."""
    message = build_message(draft, user)
    raw = message.as_bytes()
    raw_key = uuid.uuid4().hex
    (outbox_dir() / f"{raw_key}.eml").write_bytes(raw)
    now = utcnow()
    async with write():
        rows = await OutgoingMessage.insert(
            OutgoingMessage(
                mailbox=draft.mailbox["id"],
                author=user["id"],
                client=draft.client_id,
                message_id=message["Message-ID"],
                in_reply_to=draft.in_reply_to,
                subject=draft.subject,
                to_addrs=draft.to,
                cc_addrs=draft.cc,
                body_text=draft.body,
                attachments=[
                    {"filename": a.filename, "size": len(a.data)} for a in draft.attachments
                ],
                raw_key=raw_key,
                status=QUEUED,
                created_at=now,
            )
        ).returning(OutgoingMessage.id)
    outgoing_id = int(rows[0]["id"])
    enqueue(outgoing_id)
    return outgoing_id


def enqueue(outgoing_id: int, delay: timedelta | None = None) -> None:
    from plugins.mail.outgoing.jobs import send_outgoing

    options = {"delay": int(delay.total_seconds() * 1000)} if delay else {}
    send_outgoing.send_with_options(args=(outgoing_id,), **options)


# --- delivery -------------------------------------------------------------------------


async def _claim(outgoing_id: int) -> dict[str, Any] | None:
    now = utcnow()
    async with write():
        row = (
            await OutgoingMessage.select()
            .where((OutgoingMessage.id == outgoing_id) & (OutgoingMessage.status == QUEUED))
            .first()
        )
        if row is None or (row["next_attempt_at"] and as_utc(row["next_attempt_at"]) > now):
            return None
        claimed = (
            await OutgoingMessage.update(
                {
                    OutgoingMessage.status: SENDING,
                    OutgoingMessage.claimed_at: now,
                    OutgoingMessage.attempts: row["attempts"] + 1,
                }
            )
            .where((OutgoingMessage.id == outgoing_id) & (OutgoingMessage.status == QUEUED))
            .returning(OutgoingMessage.id)
        )
    if not claimed:
        return None
    row["attempts"] += 1
    return _decoded(row)


async def deliver(outgoing_id: int) -> str | None:
    """Send a queued message, save it to Sent, show it on the card; returns its status.

    None when there was nothing to do (already sent, being sent, or not due yet).
    """
    row = await _claim(outgoing_id)
    if row is None:
        return None
    mailbox = await Mailbox.select().where(Mailbox.id == row["mailbox"]).first()
    raw_path = outbox_dir() / f"{row['raw_key']}.eml"
    try:
        if mailbox is None:
            raise smtp.DeliveryError("the mailbox was removed", transient=False)
        raw = raw_path.read_bytes()
        server = smtp.smtp_server(mailbox)
        recipients = [*row["to_addrs"], *row["cc_addrs"]]
        await asyncio.to_thread(smtp.send_message, server, mailbox["email"], recipients, raw)
    except smtp.DeliveryError as exc:
        return await _failed(row, exc)
    except OSError as exc:  # the stored message itself is unreadable
        return await _failed(row, smtp.DeliveryError(str(exc), transient=False))
    async with write():
        await OutgoingMessage.update(
            {
                OutgoingMessage.status: SENT,
                OutgoingMessage.sent_at: utcnow(),
                OutgoingMessage.error: "",
                OutgoingMessage.next_attempt_at: None,
            }
        ).where(OutgoingMessage.id == outgoing_id)
    await save_sent_copy(outgoing_id, mailbox, raw)
    await record_on_card(row, mailbox, raw)
    return SENT


async def _failed(row: dict[str, Any], error: smtp.DeliveryError) -> str:
    retry = error.transient and row["attempts"] < MAX_ATTEMPTS
    delay = backoff(row["attempts"])
    values: dict[Any, Any] = {OutgoingMessage.error: error.reason}
    if retry:
        values |= {
            OutgoingMessage.status: QUEUED,
            OutgoingMessage.next_attempt_at: utcnow() + delay,
        }
    else:
        values |= {OutgoingMessage.status: FAILED, OutgoingMessage.next_attempt_at: None}
    async with write():
        await OutgoingMessage.update(values).where(OutgoingMessage.id == row["id"])
    log.warning(
        "mail %s attempt %s failed (%s): %s",
        row["message_id"],
        row["attempts"],
        "will retry" if retry else "gave up",
        error.reason,
    )
    if retry:
        enqueue(row["id"], delay)
        return QUEUED
    return FAILED


async def save_sent_copy(outgoing_id: int, mailbox: dict[str, Any], raw: bytes) -> None:
    """APPEND to the Sent folder; a failure is recorded, the message stays sent."""
    try:
        server = smtp.imap_server(mailbox)
        await asyncio.to_thread(smtp.append_to_sent, server, raw, mailbox["sent_folder"])
    except smtp.DeliveryError as exc:
        async with write():
            await OutgoingMessage.update({OutgoingMessage.sent_copy_error: exc.reason}).where(
                OutgoingMessage.id == outgoing_id
            )
        log.warning("sent copy of outgoing %s not saved: %s", outgoing_id, exc.reason)
        return
    async with write():
        await OutgoingMessage.update(
            {OutgoingMessage.sent_copy_saved: True, OutgoingMessage.sent_copy_error: ""}
        ).where(OutgoingMessage.id == outgoing_id)


async def record_on_card(row: dict[str, Any], mailbox: dict[str, Any], raw: bytes) -> None:
    """Store the sent message the way the sync stores one (keyed by its Message-ID),
    so it is on the client's timeline and Mail tab at once, and the later sync of the
    Sent folder only adds its server location instead of a second copy."""
    try:
        await _store_sent(row, mailbox, raw)
    except Exception:  # the mail is sent; the card catches up when Sent is synced
        log.exception("sent message %s not recorded on the card", row["message_id"])


async def _store_sent(row: dict[str, Any], mailbox: dict[str, Any], raw: bytes) -> None:
    from plugins.mail.sync import engine

    await engine.record_sent(mailbox, raw, [row["client"]] if row["client"] else [], row["author"])


async def retry(outgoing_id: int, user: dict[str, Any]) -> None:
    """The sender's "retry" on a failed message: queued again, tried at once."""
    row = await get_outgoing(outgoing_id, user)
    if row["status"] != FAILED:
        raise ValidationError({"status": _("Only a failed message can be retried.")})
    async with write():
        await OutgoingMessage.update(
            {OutgoingMessage.status: QUEUED, OutgoingMessage.next_attempt_at: None}
        ).where((OutgoingMessage.id == outgoing_id) & (OutgoingMessage.status == FAILED))
    enqueue(outgoing_id)


def _mine(user: dict[str, Any]) -> Any:
    """Senders see their own messages; an admin sees everyone's."""
    return None if access.current().is_admin else OutgoingMessage.author == user["id"]


async def get_outgoing(outgoing_id: int, user: dict[str, Any]) -> dict[str, Any]:
    query = OutgoingMessage.select().where(OutgoingMessage.id == outgoing_id)
    mine = _mine(user)
    if mine is not None:
        query = query.where(mine)
    row = await query.first()
    if row is None:
        raise NotFound(outgoing_id)
    return _decoded(row)


async def outbox(user: dict[str, Any], limit: int = 100) -> list[dict[str, Any]]:
    query = OutgoingMessage.select(
        *OutgoingMessage.all_columns(exclude=[OutgoingMessage.body_text]),
        OutgoingMessage.client.name.as_alias("client_name"),
        OutgoingMessage.mailbox.email.as_alias("mailbox_email"),
    )
    mine = _mine(user)
    if mine is not None:
        query = query.where(mine)
    rows = await query.order_by(OutgoingMessage.id, ascending=False).limit(limit)
    return [_decoded(row) for row in rows]


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    """JSON columns as lists (SQLite hands them back as text), times in UTC."""
    for key in ("to_addrs", "cc_addrs", "attachments"):
        if isinstance(row.get(key), str):
            row[key] = json.loads(row[key] or "[]")
    for key in ("created_at", "sent_at", "next_attempt_at", "claimed_at"):
        if key in row:
            row[key] = as_utc(row[key])
    return row


async def for_client(client_id: int) -> list[dict[str, Any]]:
    """Messages to this client not yet sent (queued, sending, failed): shown on the Mail tab."""
    await clients.ensure_visible(client_id)
    rows = (
        await OutgoingMessage.select(
            *OutgoingMessage.all_columns(exclude=[OutgoingMessage.body_text])
        )
        .where((OutgoingMessage.client == client_id) & (OutgoingMessage.status != SENT))
        .order_by(OutgoingMessage.id, ascending=False)
    )
    return [_decoded(row) for row in rows]


async def sweep() -> dict[str, int]:
    """Every minute: re-send messages whose job was lost, report claims of dead jobs."""
    now = utcnow()
    due = await OutgoingMessage.select(OutgoingMessage.id, OutgoingMessage.next_attempt_at).where(
        (OutgoingMessage.status == QUEUED)
        & (OutgoingMessage.created_at < now - timedelta(minutes=1))
    )
    requeued = 0
    for row in due:
        if row["next_attempt_at"] is None or as_utc(row["next_attempt_at"]) <= now:
            enqueue(row["id"])  # a duplicate job finds the row claimed and does nothing
            requeued += 1
    async with write():
        stale = (
            await OutgoingMessage.update(
                {
                    OutgoingMessage.status: FAILED,
                    OutgoingMessage.error: _(
                        "Interrupted while sending: check whether the recipient got it before "
                        "retrying."
                    ),
                }
            )
            .where(
                (OutgoingMessage.status == SENDING)
                & (OutgoingMessage.claimed_at < now - STALE_AFTER)
            )
            .returning(OutgoingMessage.id)
        )
    return {"requeued": requeued, "interrupted": len(stale)}
