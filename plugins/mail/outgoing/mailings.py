"""Mass mailings to a segment: a saved filter of the core's client list.

Recipients are resolved through ``core.services.clients.list_clients`` acting as the
mailing's author, page by page with its cursor, so a manager's mailing reaches only
the clients that manager sees. Delivery is a job that sends one recipient at a
time at the mailing's pace; each recipient's status is committed on its own:

    queued --claim--> sending --SMTP accepted--> sent
                              \\-> failed (reason) / back to queued (temporary)

A run that dies leaves at most the one claimed recipient in ``sending``; it is never
sent again automatically (it may have gone out) but reported as interrupted. A new run
carries on with the queued ones, so a crash neither loses nor doubles a message. The
recipient's Message-ID is derived from the mailing and recipient ids: the idempotency
key of its one message.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from core import access
from core.i18n import _
from core.services import clients
from core.services.clients import ClientQuery
from core.services.common import NotFound, as_utc, utcnow, write
from core.tables import User
from core.validation import ValidationError
from plugins.mail.outgoing import compose, smtp, unsubscribe
from plugins.mail.outgoing.tables import (
    CANCELLED,
    DONE,
    DRAFT,
    FAILED,
    PAUSED,
    QUEUED,
    RUNNING,
    SENDING,
    SENT,
    SKIPPED,
    Mailing,
    MailingRecipient,
    MailSegment,
)
from plugins.mail.outgoing.templates_render import TemplateProblem, check, context_for, render

log = logging.getLogger(__name__)

FILTER_KEYS = ("q", "responsible", "tag", "source")
"""The client list's filters a segment keeps (the same names as its query string)."""
RUN_SECONDS = 50.0
"""One job sends for this long, then hands over to a fresh job (the queue stays fair)."""
RESOLVE_PAGE = 200
MAX_ATTEMPTS = 3
"""Tries of one recipient whose failure may pass; a mailing does not hammer a sick server."""
STALE_AFTER = timedelta(minutes=10)
STATUS_EVERY = 1.0
"""Seconds between looks at the mailing's status (a pause or cancel acts this fast)."""
IDLE_AFTER = timedelta(minutes=3)
"""A running mailing without a claim for this long has lost its job: the sweep restarts it."""
MAX_PER_MINUTE = 6000
SKIP_NO_EMAIL = "no e-mail"
SKIP_UNSUBSCRIBED = "unsubscribed"


# --- segments -------------------------------------------------------------------------


def clean_filters(data: dict[str, Any]) -> dict[str, Any]:
    """The client-list filters in a form (or query string), as a segment stores them."""
    filters: dict[str, Any] = {}
    for key in FILTER_KEYS:
        value = str(data.get(key) or "").strip()
        if not value:
            continue
        if key == "responsible":
            if not value.isdigit():
                continue
            filters[key] = int(value)
        else:
            filters[key] = value[:200]
    return filters


def segment_query(
    filters: dict[str, Any], cursor: str = "", size: int = RESOLVE_PAGE
) -> ClientQuery:
    """The core list's query for a stored segment (see core/web/controllers/queries.py)."""
    responsible = filters.get("responsible")
    return ClientQuery(
        search=str(filters.get("q") or ""),
        responsible=int(responsible) if responsible else None,
        tag=str(filters.get("tag") or ""),
        source=str(filters.get("source") or ""),
        cursor=cursor,
        size=size,
    )


def _own(column: Any, user: dict[str, Any]) -> Any:
    """Authors see their own segments and mailings; an admin sees all."""
    return None if access.current().is_admin else column == user["id"]


async def save_segment(data: dict[str, Any], user: dict[str, Any]) -> int:
    name = str(data.get("name") or "").strip()
    if not name:
        raise ValidationError({"name": _("This field is required.")})
    async with write():
        rows = await MailSegment.insert(
            MailSegment(
                name=name[:128], filters=clean_filters(data), author=user["id"], created_at=utcnow()
            )
        ).returning(MailSegment.id)
    return int(rows[0]["id"])


async def list_segments(user: dict[str, Any]) -> list[dict[str, Any]]:
    query = MailSegment.select()
    mine = _own(MailSegment.author, user)
    if mine is not None:
        query = query.where(mine)
    return [_with_filters(row) for row in await query.order_by(MailSegment.name)]


async def get_segment(segment_id: int, user: dict[str, Any]) -> dict[str, Any]:
    query = MailSegment.select().where(MailSegment.id == segment_id)
    mine = _own(MailSegment.author, user)
    if mine is not None:
        query = query.where(mine)
    row = await query.first()
    if row is None:
        raise NotFound(segment_id)
    return _with_filters(row)


async def sample_clients(filters: dict[str, Any], size: int = 10) -> list[dict[str, Any]]:
    """The first clients of a segment as the current user sees them (the preview)."""
    rows, _cursor = await clients.list_clients(segment_query(filters, size=size))
    return rows


# --- mailings -------------------------------------------------------------------------


async def create_mailing(data: dict[str, Any], user: dict[str, Any], base_url: str) -> int:
    """A draft mailing; ValidationError names the fields to fix."""
    errors: dict[str, str] = {}
    name = str(data.get("name") or "").strip()
    if not name:
        errors["name"] = _("This field is required.")
    segment: dict[str, Any] | None = None
    try:
        segment = await get_segment(int(data.get("segment") or 0), user)
    except (NotFound, ValueError):
        errors["segment"] = _("Choose a saved segment.")
    try:
        mailbox = await compose.usable_mailbox(user, int(data.get("mailbox") or 0))
    except (NotFound, ValueError):
        errors["mailbox"] = _("Choose a mailbox you may send from.")
    subject = str(data.get("subject") or "").strip()
    body = str(data.get("body") or "")
    for field_name, text in (("subject", subject), ("body", body)):
        if not text.strip():
            errors[field_name] = _("This field is required.")
        elif problem := check(text):
            errors[field_name] = problem
    try:
        per_minute = int(data.get("per_minute") or 60)
        if not 1 <= per_minute <= MAX_PER_MINUTE:
            raise ValueError
    except ValueError:
        errors["per_minute"] = _("From 1 to %(n)s messages a minute.", n=MAX_PER_MINUTE)
    if errors:
        raise ValidationError(errors)
    assert segment is not None
    async with write():
        rows = await Mailing.insert(
            Mailing(
                name=name[:128],
                segment=segment["id"],
                filters=segment["filters"],
                mailbox=mailbox["id"],
                author=user["id"],
                subject=subject,
                body=body,
                per_minute=per_minute,
                base_url=base_url.rstrip("/"),
                status=DRAFT,
                created_at=utcnow(),
            )
        ).returning(Mailing.id)
    return int(rows[0]["id"])


async def get_mailing(mailing_id: int, user: dict[str, Any] | None = None) -> dict[str, Any]:
    query = Mailing.select(
        *Mailing.all_columns(),
        Mailing.author.full_name.as_alias("author_name"),
        Mailing.mailbox.email.as_alias("mailbox_email"),
    ).where(Mailing.id == mailing_id)
    if user is not None and (mine := _own(Mailing.author, user)) is not None:
        query = query.where(mine)
    row = await query.first()
    if row is None:
        raise NotFound(mailing_id)
    return _with_filters(row)


def _with_filters(row: dict[str, Any]) -> dict[str, Any]:
    """The stored filter as a dict (SQLite hands JSON columns back as text)."""
    if isinstance(row.get("filters"), str):
        row["filters"] = json.loads(row["filters"] or "{}")
    return row


async def list_mailings(user: dict[str, Any]) -> list[dict[str, Any]]:
    query = Mailing.select(
        Mailing.id, Mailing.name, Mailing.status, Mailing.created_at, Mailing.per_minute
    )
    if (mine := _own(Mailing.author, user)) is not None:
        query = query.where(mine)
    rows = await query.order_by(Mailing.id, ascending=False)
    for row in rows:
        row["counts"] = await counts(row["id"])
    return rows


async def counts(mailing_id: int) -> dict[str, int]:
    rows = await MailingRecipient.raw(
        "SELECT status, count(*) AS n FROM mail_mailing_recipient WHERE mailing = {} "
        "GROUP BY status",
        mailing_id,
    )
    found = {row["status"]: int(row["n"]) for row in rows}
    found["total"] = sum(found.values())
    return found


async def recipients(mailing_id: int, status: str = "", limit: int = 200) -> list[dict[str, Any]]:
    query = MailingRecipient.select().where(MailingRecipient.mailing == mailing_id)
    if status:
        query = query.where(MailingRecipient.status == status)
    return await query.order_by(MailingRecipient.id).limit(limit)


async def _author(mailing: dict[str, Any]) -> dict[str, Any]:
    row = await User.select().where(User.id == mailing["author"]).first()
    if row is None:
        raise NotFound(mailing["author"])
    return row


def message_id_for(mailing: dict[str, Any], recipient_id: int, domain: str) -> str:
    """The recipient's idempotency key: the same Message-ID on every attempt."""
    tag = hashlib.sha256(f"{mailing['id']}:{recipient_id}:{mailing['created_at']}".encode())
    return f"<mailing.{mailing['id']}.{recipient_id}.{tag.hexdigest()[:12]}@{domain}>"


async def render_for(
    mailing: dict[str, Any], author: dict[str, Any], client_id: int | None, email: str
) -> tuple[str, str]:
    """Subject and body for one recipient, as the author sees the client."""
    context = await context_for(client_id, author, contact_email=email)
    context["unsubscribe_url"] = unsubscribe.link(mailing["base_url"], email, mailing["id"])
    subject = " ".join(render(mailing["subject"], context).split())
    return subject, render(mailing["body"], context)


def build_message(
    mailing: dict[str, Any],
    mailbox: dict[str, Any],
    author: dict[str, Any],
    email: str,
    subject: str,
    body: str,
    message_id: str,
) -> bytes:
    message = EmailMessage()
    message["Message-ID"] = message_id
    message["Date"] = format_datetime(utcnow())
    message["From"] = compose.sender_address(mailbox, author)
    message["To"] = email
    message["Subject"] = subject
    unsubscribe_url = unsubscribe.link(mailing["base_url"], email, mailing["id"])
    message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"  # RFC 8058
    message["Precedence"] = "bulk"
    message.set_content(body)
    return message.as_bytes()


async def preview(mailing_id: int, user: dict[str, Any]) -> dict[str, Any]:
    """The letter as the first client of the segment would get it."""
    mailing = await get_mailing(mailing_id, user)
    sample = await sample_clients(mailing["filters"], size=1)
    client = sample[0] if sample else None
    email = (client or {}).get("email") or user.get("email") or ""
    try:
        subject, body = await render_for(mailing, user, client["id"] if client else None, email)
    except TemplateProblem as exc:
        return {"client": client, "error": str(exc)}
    return {"client": client, "email": email, "subject": subject, "body": body}


async def test_send(mailing_id: int, user: dict[str, Any]) -> int:
    """Send the preview to the author's own address, through the normal outbox."""
    mailing = await get_mailing(mailing_id, user)
    mailbox = await compose.usable_mailbox(user, mailing["mailbox"])
    address = (user.get("email") or mailbox["email"]).lower()
    sample = await sample_clients(mailing["filters"], size=1)
    client_id = sample[0]["id"] if sample else None
    try:
        subject, body = await render_for(mailing, user, client_id, address)
    except TemplateProblem as exc:
        raise ValidationError({"body": str(exc)}) from None
    draft = compose.Draft(
        mailbox=mailbox,
        client_id=None,
        to=[address],
        cc=[],
        subject=_("[Test] %(subject)s", subject=subject),
        body=body,
    )
    return await compose.queue(draft, user)


async def start(mailing_id: int, user: dict[str, Any]) -> None:
    mailing = await get_mailing(mailing_id, user)
    if mailing["status"] not in (DRAFT, PAUSED):
        raise ValidationError({"status": _("This mailing is already running or finished.")})
    async with write():
        await Mailing.update(
            {Mailing.status: RUNNING, Mailing.started_at: mailing["started_at"] or utcnow()}
        ).where(Mailing.id == mailing_id)
    enqueue(mailing_id)


async def set_status(mailing_id: int, user: dict[str, Any], status: str) -> None:
    """Pause or cancel; a running job stops before its next recipient."""
    mailing = await get_mailing(mailing_id, user)
    if mailing["status"] in (DONE, CANCELLED):
        return
    async with write():
        await Mailing.update({Mailing.status: status}).where(Mailing.id == mailing_id)


def enqueue(mailing_id: int, delay: timedelta | None = None) -> None:
    from plugins.mail.outgoing.jobs import run_mailing

    options = {"delay": int(delay.total_seconds() * 1000)} if delay else {}
    run_mailing.send_with_options(args=(mailing_id,), **options)


# --- delivery -------------------------------------------------------------------------


async def resolve(mailing: dict[str, Any]) -> int:
    """Add the segment's clients as recipients, as the author sees them; idempotent
    (unique mailing + client), so a run that died half-way simply carries on."""
    author = await _author(mailing)
    added = 0
    with access.acting_as(await access.for_user(author)):
        cursor = ""
        while True:
            rows, next_cursor = await clients.list_clients(
                segment_query(mailing["filters"], cursor=cursor)
            )
            emails = [(row.get("email") or "").lower() for row in rows]
            stopped = await unsubscribe.unsubscribed([e for e in emails if e])
            batch = []
            for row, email in zip(rows, emails, strict=True):
                status, reason = QUEUED, ""
                if not email:
                    status, reason = SKIPPED, SKIP_NO_EMAIL
                elif email in stopped:
                    status, reason = SKIPPED, SKIP_UNSUBSCRIBED
                batch.append(
                    MailingRecipient(
                        mailing=mailing["id"],
                        client=row["id"],
                        client_name=row["name"][:255],
                        email=email,
                        status=status,
                        reason=reason,
                    )
                )
            if batch:
                async with write():
                    inserted = (
                        await MailingRecipient.insert(*batch)
                        .on_conflict(action="DO NOTHING")
                        .returning(MailingRecipient.id)
                    )
                added += len(inserted)
            if not next_cursor:
                break
            cursor = next_cursor
    async with write():
        await Mailing.update({Mailing.resolved: True}).where(Mailing.id == mailing["id"])
    return added


@dataclass
class Letter:
    recipient: dict[str, Any]
    subject: str
    body: str


async def _next_letter(
    mailing: dict[str, Any], author: dict[str, Any], domain: str
) -> Letter | bool:
    """Claim the next queued recipient and write its letter, in one transaction (one
    connection instead of a dozen). Returns the letter; True when the recipient was
    settled without sending (unsubscribed meanwhile, client gone, taken by another run);
    False when nobody is left."""
    async with write():
        row = (
            await MailingRecipient.select()
            .where(
                (MailingRecipient.mailing == mailing["id"]) & (MailingRecipient.status == QUEUED)
            )
            .order_by(MailingRecipient.id)
            .first()
        )
        if row is None:
            return False
        row["message_id"] = message_id_for(mailing, row["id"], domain)
        row["attempts"] += 1
        claimed = (
            await MailingRecipient.update(
                {
                    MailingRecipient.status: SENDING,
                    MailingRecipient.claimed_at: utcnow(),
                    MailingRecipient.attempts: row["attempts"],
                    MailingRecipient.message_id: row["message_id"],
                }
            )
            .where((MailingRecipient.id == row["id"]) & (MailingRecipient.status == QUEUED))
            .returning(MailingRecipient.id)
        )
        if not claimed:
            return True
        if await unsubscribe.unsubscribed([row["email"]]):  # while the mailing runs
            await _set_status(row["id"], SKIPPED, SKIP_UNSUBSCRIBED)
            return True
        try:
            subject, body = await render_for(mailing, author, row["client"], row["email"])
        except TemplateProblem as exc:
            await _set_status(row["id"], FAILED, str(exc))
            return True
        except NotFound:
            await _set_status(row["id"], FAILED, _("The client is no longer visible."))
            return True
    return Letter(row, subject, body)


async def _set_status(recipient_id: int, status: str, reason: str = "") -> None:
    values: dict[Any, Any] = {MailingRecipient.status: status, MailingRecipient.reason: reason}
    if status == SENT:
        values[MailingRecipient.sent_at] = utcnow()
    await MailingRecipient.update(values).where(MailingRecipient.id == recipient_id)


async def _finish(recipient_id: int, status: str, reason: str = "") -> None:
    async with write():
        await _set_status(recipient_id, status, reason)


async def _current_status(mailing_id: int) -> str | None:
    row = await Mailing.select(Mailing.status).where(Mailing.id == mailing_id).first()
    return row["status"] if row else None


async def run(mailing_id: int, time_budget: float = RUN_SECONDS) -> str:
    """Send to queued recipients at the mailing's pace for up to ``time_budget`` seconds;
    returns the mailing's status. Another run is queued while recipients remain."""
    from plugins.mail.tables import Mailbox

    try:
        mailing = await get_mailing(mailing_id)
    except NotFound:  # deleted while its job waited
        return CANCELLED
    if mailing["status"] != RUNNING:
        return mailing["status"]
    if not mailing["resolved"]:
        await resolve(mailing)
    mailbox = await Mailbox.select().where(Mailbox.id == mailing["mailbox"]).first()
    author = await _author(mailing)
    if mailbox is None:
        return await _stop(mailing_id, _("The mailbox of this mailing was removed."))
    domain = mailbox["email"].rpartition("@")[2] or "localhost"
    interval = 60.0 / max(int(mailing["per_minute"]), 1)
    try:
        session = smtp.SmtpSession(smtp.smtp_server(mailbox))
    except smtp.DeliveryError as exc:
        return await _stop(mailing_id, exc.reason)
    started = checked = time.monotonic()
    retry_after: timedelta | None = None
    try:
        with access.acting_as(await access.for_user(author)):
            while time.monotonic() - started < time_budget:
                if time.monotonic() - checked >= STATUS_EVERY:  # paused or cancelled?
                    checked = time.monotonic()
                    if (status := await _current_status(mailing_id)) != RUNNING:
                        return status or CANCELLED
                letter = await _next_letter(mailing, author, domain)
                if letter is False:
                    break
                if letter is True:
                    continue
                sent_at = time.monotonic()
                retry_after = await _send_one(mailing, mailbox, author, session, letter)
                if retry_after is not None:
                    break
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - sent_at)))
    finally:
        await asyncio.to_thread(session.close)
    return await _after_run(mailing_id, retry_after)


async def _send_one(
    mailing: dict[str, Any],
    mailbox: dict[str, Any],
    author: dict[str, Any],
    session: smtp.SmtpSession,
    letter: Letter,
) -> timedelta | None:
    """Send one letter; returns a delay when the server failed in a way that may pass."""
    recipient, email = letter.recipient, letter.recipient["email"]
    subject, body = letter.subject, letter.body
    raw = build_message(mailing, mailbox, author, email, subject, body, recipient["message_id"])
    try:
        await asyncio.to_thread(session.send, mailbox["email"], [email], raw)
    except smtp.DeliveryError as exc:
        if exc.transient and recipient["attempts"] < MAX_ATTEMPTS:
            await _finish(recipient["id"], QUEUED, exc.reason)
            return compose.backoff(recipient["attempts"])
        await _finish(recipient["id"], FAILED, exc.reason)
        return None
    await _finish(recipient["id"], SENT)
    return None


async def _stop(mailing_id: int, reason: str) -> str:
    async with write():
        await Mailing.update({Mailing.status: PAUSED, Mailing.last_error: reason}).where(
            Mailing.id == mailing_id
        )
    return PAUSED


async def _after_run(mailing_id: int, retry_after: timedelta | None) -> str:
    """Hand over to the next run, or close the mailing when nobody is left to send to."""
    if await _current_status(mailing_id) != RUNNING:
        return await _current_status(mailing_id) or CANCELLED
    left = await counts(mailing_id)
    if left.get(QUEUED):
        enqueue(mailing_id, retry_after)
        return RUNNING
    if left.get(SENDING):  # a claim of a run that died: the sweep settles it
        return RUNNING
    async with write():
        await Mailing.update(
            {Mailing.status: DONE, Mailing.finished_at: utcnow(), Mailing.last_error: ""}
        ).where((Mailing.id == mailing_id) & (Mailing.status == RUNNING))
    return DONE


async def settle_interrupted(stale_after: timedelta = STALE_AFTER) -> list[int]:
    """Recipients claimed by a run that died: reported, never re-sent on their own
    (the message may have left before the crash). Returns the mailings touched."""
    cutoff = utcnow() - stale_after
    async with write():
        rows = (
            await MailingRecipient.update(
                {
                    MailingRecipient.status: FAILED,
                    MailingRecipient.reason: _(
                        "Interrupted while sending: it may or may not have been delivered."
                    ),
                }
            )
            .where((MailingRecipient.status == SENDING) & (MailingRecipient.claimed_at <= cutoff))
            .returning(MailingRecipient.mailing)
        )
    return sorted({row["mailing"] for row in rows})


async def sweep(stale_after: timedelta = STALE_AFTER) -> None:
    """Every minute: settle dead claims, and keep running mailings moving (a lost job
    message, a restart in embedded mode); a duplicate run is harmless."""
    await settle_interrupted(stale_after)
    idle_since = utcnow() - IDLE_AFTER
    running = await Mailing.select(Mailing.id, Mailing.started_at).where(Mailing.status == RUNNING)
    for row in running:
        last = (
            await MailingRecipient.select(MailingRecipient.claimed_at)
            .where(
                (MailingRecipient.mailing == row["id"]) & MailingRecipient.claimed_at.is_not_null()
            )
            .order_by(MailingRecipient.claimed_at, ascending=False)
            .first()
        )
        active_at = as_utc(last["claimed_at"]) if last else as_utc(row["started_at"])
        if active_at is None or active_at < idle_since:  # its job is lost, not just slow
            enqueue(row["id"])
