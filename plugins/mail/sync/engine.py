"""Incremental, idempotent sync of a mailbox's INBOX and Sent folders into the CRM.

The guarantees (docs/mail.md, "Sync guarantees"):

* A batch of messages, their client links and timeline entries, and the folder's
  cursor (``MailFolder.last_uid``) are written in ONE transaction: the cursor can
  never run ahead of what is stored, and a crash anywhere in a batch leaves the
  database as before the batch; the next run fetches it again.
* Unique keys make every write idempotent: (mailbox, folder, UIDVALIDITY, UID) for the
  server copy, the Message-ID hash for the message, (message, client) for the link,
  so re-fetching after a crash, a UIDVALIDITY reset, or the same message in two
  mailboxes adds nothing twice.
* The server is only read: EXAMINE + BODY.PEEK[] (see sync/imap.py).
* Only one sync of a mailbox runs at a time (a lease on the mailbox row), so the
  minute-by-minute job and a long first sync never race.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from core.db import get_engine
from core.sealed import unseal
from core.services.clients import find_client
from core.services.common import utcnow, write
from core.services.timeline import add_entry
from core.tables import User
from plugins.mail import storage
from plugins.mail.parsing import ParsedMessage, message_key, parse, thread_root
from plugins.mail.sync.imap import ImapSettings, Session
from plugins.mail.tables import (
    INBOX,
    SENT,
    MailAttachment,
    Mailbox,
    MailFolder,
    MailLocation,
    MailMessage,
    MailMessageClient,
)

log = logging.getLogger("kartoteka.mail.sync")

BATCH_SIZE = 50
BATCH_BYTES = 64 * 2**20
"""A batch is held in memory while it is parsed: big attachments make batches shorter."""
LEASE = timedelta(minutes=10)
TIMELINE_KIND = "mail.message"
SNIPPET = 200


@dataclass
class SyncReport:
    stored: int = 0
    already_known: int = 0
    malformed: int = 0
    folders: dict[str, int] = field(default_factory=dict)
    skipped: bool = False


def imap_settings(mailbox: dict[str, Any]) -> ImapSettings:
    return ImapSettings(
        host=mailbox["imap_host"],
        port=int(mailbox["imap_port"]),
        security=mailbox["imap_security"],
        user=mailbox["imap_user"],
        password=unseal(mailbox["imap_password_sealed"]) if mailbox["imap_password_sealed"] else "",
    )


async def _claim(mailbox_id: int) -> dict[str, Any] | None:
    """Take the mailbox's sync lease; None while another sync holds it."""
    now = utcnow()
    async with write():
        claimed = (
            await Mailbox.update(
                {
                    Mailbox.sync_lease_until: now + LEASE,
                    Mailbox.sync_state: "running",
                }
            )
            .where(
                (Mailbox.id == mailbox_id)
                & Mailbox.sync_enabled.eq(True)
                & (Mailbox.sync_lease_until.is_null() | (Mailbox.sync_lease_until < now))
            )
            .returning(Mailbox.id)
        )
    if not claimed:
        return None
    return await Mailbox.select().where(Mailbox.id == mailbox_id).first()


async def _release(mailbox_id: int, error: str) -> None:
    async with write():
        await Mailbox.update(
            {
                Mailbox.sync_lease_until: None,
                Mailbox.sync_state: "error" if error else "idle",
                Mailbox.last_error: error,
                Mailbox.last_sync_at: utcnow(),
            }
        ).where(Mailbox.id == mailbox_id)


async def own_addresses() -> set[str]:
    """Addresses of the install's own people and mailboxes: never matched to a client."""
    found = {r["email"].lower() for r in await Mailbox.select(Mailbox.email) if r["email"]}
    found |= {
        r["imap_user"].lower()
        for r in await Mailbox.select(Mailbox.imap_user)
        if "@" in r["imap_user"]
    }
    found |= {r["email"].lower() for r in await User.select(User.email) if r["email"]}
    return found


async def sync_mailbox(mailbox_id: int, *, batch_size: int = BATCH_SIZE) -> SyncReport:
    """Bring the CRM up to date with the mailbox's INBOX and Sent; safe to run any time."""
    report = SyncReport()
    mailbox = await _claim(mailbox_id)
    if mailbox is None:
        report.skipped = True
        return report
    error = ""
    try:
        session = await asyncio.to_thread(Session, imap_settings(mailbox))
        try:
            matcher = Matcher(await own_addresses())
            for role, name in await _folders(session, mailbox):
                report.folders[role] = await _sync_folder(
                    session, mailbox, role, name, matcher, batch_size, report
                )
        finally:
            await asyncio.to_thread(session.__exit__)
    except Exception as exc:
        error = str(exc) or type(exc).__name__
        log.warning("mail sync of mailbox %s failed: %s", mailbox_id, error)
        raise
    finally:
        await _release(mailbox_id, error)
    return report


async def _folders(session: Session, mailbox: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, server name) to sync: configured names win over SPECIAL-USE detection."""
    inbox = mailbox["inbox_folder"] or "INBOX"
    sent = mailbox["sent_folder"] or await asyncio.to_thread(session.detect_sent)
    folders = [(INBOX, inbox)]
    if sent:
        folders.append((SENT, sent))
    else:
        log.warning(
            "mailbox %s: no Sent folder found; set it in the mailbox settings", mailbox["id"]
        )
    return folders


async def _cursor(mailbox_id: int, role: str, name: str, uidvalidity: int) -> dict[str, Any]:
    """The folder's cursor, reset when the folder or its UIDVALIDITY changed.

    After a reset every message is fetched again; the Message-ID key finds the rows
    already stored, so nothing is duplicated, only new server locations are recorded.
    """
    async with write():
        row = (
            await MailFolder.select()
            .where((MailFolder.mailbox == mailbox_id) & (MailFolder.role == role))
            .first()
        )
        if row is None:
            await MailFolder.insert(
                MailFolder(mailbox=mailbox_id, role=role, name=name, uidvalidity=uidvalidity)
            )
        elif row["uidvalidity"] != uidvalidity or row["name"] != name:
            log.info(
                "mailbox %s %s: UIDVALIDITY %s -> %s (or folder renamed), resyncing",
                mailbox_id,
                role,
                row["uidvalidity"],
                uidvalidity,
            )
            await MailFolder.update(
                {MailFolder.name: name, MailFolder.uidvalidity: uidvalidity, MailFolder.last_uid: 0}
            ).where(MailFolder.id == row["id"])
        current = (
            await MailFolder.select()
            .where((MailFolder.mailbox == mailbox_id) & (MailFolder.role == role))
            .first()
        )
    assert current is not None  # inserted or updated above, in this transaction
    return current


async def _sync_folder(
    session: Session,
    mailbox: dict[str, Any],
    role: str,
    name: str,
    matcher: Matcher,
    batch_size: int,
    report: SyncReport,
) -> int:
    state = await asyncio.to_thread(session.examine, name)
    folder = await _cursor(mailbox["id"], role, name, state.uidvalidity)
    since = mailbox["sync_since"] if folder["last_uid"] == 0 else None
    uids = await asyncio.to_thread(session.uids_after, folder["last_uid"], since)
    done = 0
    for batch in await _batches(session, uids, batch_size):
        raws = await asyncio.to_thread(session.fetch, batch)
        # One connection for the batch's lookups: without a pool (the job worker on
        # PostgreSQL) every query outside a transaction would open its own.
        async with get_engine().transaction():
            prepared = [
                await _prepare(uid, raws.get(uid), role, mailbox, matcher, report) for uid in batch
            ]
        async with write():
            for item in prepared:
                if item is not None:
                    await _store(item, mailbox["id"], folder["id"], state.uidvalidity, report)
            await MailFolder.update(
                {MailFolder.last_uid: batch[-1], MailFolder.synced_at: utcnow()}
            ).where((MailFolder.id == folder["id"]) & (MailFolder.uidvalidity == state.uidvalidity))
            await Mailbox.update(
                {
                    Mailbox.sync_progress: json.dumps(
                        {"folder": role, "done": done + len(batch), "total": len(uids)}
                    ),
                    Mailbox.sync_lease_until: utcnow() + LEASE,
                }
            ).where(Mailbox.id == mailbox["id"])
        done += len(batch)
    return done


async def _batches(session: Session, uids: list[int], batch_size: int) -> list[list[int]]:
    """Batches of at most ``batch_size`` messages and ``BATCH_BYTES`` (one may be bigger)."""
    batches: list[list[int]] = []
    for start in range(0, len(uids), batch_size * 20):
        chunk = uids[start : start + batch_size * 20]
        sizes = await asyncio.to_thread(session.sizes, chunk)
        current: list[int] = []
        total = 0
        for uid in chunk:
            size = sizes.get(uid, 0)
            if current and (len(current) >= batch_size or total + size > BATCH_BYTES):
                batches.append(current)
                current, total = [], 0
            current.append(uid)
            total += size
        if current:
            batches.append(current)
    return batches


@dataclass
class Matcher:
    """Finds the clients of a message's addresses; remembers answers for one sync run
    (a mailbox repeats the same correspondents, and a domain lookup scans addresses)."""

    ours: set[str]
    known: dict[str, int | None] = field(default_factory=dict)

    async def clients_for(self, addresses: list[str]) -> list[int]:
        found: list[int] = []
        for address in addresses:
            if address in self.ours:
                continue
            if address not in self.known:
                self.known[address] = await find_client(email=address)
            client_id = self.known[address]
            if client_id is not None and client_id not in found:
                found.append(client_id)
        return found


@dataclass
class Prepared:
    uid: int
    parsed: ParsedMessage
    direction: str
    client_ids: list[int]
    attachments: list[dict[str, Any]]


async def _prepare(
    uid: int,
    raw: bytes | None,
    role: str,
    mailbox: dict[str, Any],
    matcher: Matcher,
    report: SyncReport,
) -> Prepared | None:
    """Parse, match and file the attachments of one message, outside the transaction."""
    if raw is None:  # expunged between SEARCH and FETCH: nothing to store
        return None
    parsed = parse(raw)
    if parsed.errors:
        report.malformed += 1
        log.warning(
            "mailbox %s %s UID %s (%s): %s",
            mailbox["id"],
            role,
            uid,
            parsed.message_id,
            "; ".join(parsed.errors)[:1000],
        )
    direction = "out" if role == SENT or parsed.from_addr in matcher.ours else "in"
    client_ids = await matcher.clients_for(parsed.participants())
    files = [
        {
            "filename": a.filename[:255],
            "content_type": a.content_type[:128],
            "content_id": a.content_id[:255],
            **await asyncio.to_thread(storage.save, a.payload),
        }
        for a in parsed.attachments
    ]
    return Prepared(uid, parsed, direction, client_ids, files)


def _clean(text: str) -> str:
    """PostgreSQL text cannot hold NUL; broken mail sometimes does."""
    return text.replace("\x00", "")


async def _thread_key(parsed: ParsedMessage) -> str:
    """A reply joins its parent's thread when the parent is stored; else the root id's."""
    for parent in ([parsed.in_reply_to] if parsed.in_reply_to else []) + parsed.references[::-1]:
        row = (
            await MailMessage.select(MailMessage.thread_key)
            .where(MailMessage.message_key == message_key(parent))
            .first()
        )
        if row:
            return str(row["thread_key"])
    return hashlib.sha256(thread_root(parsed).encode()).hexdigest()


async def _store(
    item: Prepared, mailbox_id: int, folder_id: int, uidvalidity: int, report: SyncReport
) -> None:
    message_id = await store_message(item, report)
    located = (
        await MailLocation.select(MailLocation.id)
        .where(
            (MailLocation.mailbox == mailbox_id)
            & (MailLocation.folder == folder_id)
            & (MailLocation.uidvalidity == uidvalidity)
            & (MailLocation.uid == item.uid)
        )
        .first()
    )
    if located is None:
        await MailLocation.insert(
            MailLocation(
                message=message_id,
                mailbox=mailbox_id,
                folder=folder_id,
                uidvalidity=uidvalidity,
                uid=item.uid,
            )
        )
    await link_clients(message_id, item.client_ids)


async def store_message(item: Prepared, report: SyncReport) -> int:
    """The message's row, inserted unless its Message-ID is already stored; its id.

    Also used by the outgoing side for a message it has just sent (no server copy
    yet), so the later sync of Sent finds this row and only adds the location.
    """
    parsed = item.parsed
    existing = (
        await MailMessage.select(MailMessage.id)
        .where(MailMessage.message_key == parsed.key)
        .first()
    )
    if existing is None:
        rows = await MailMessage.insert(
            MailMessage(
                message_key=parsed.key,
                message_id=_clean(parsed.message_id),
                synthetic_id=parsed.synthetic_id,
                thread_key=await _thread_key(parsed),
                in_reply_to=_clean(parsed.in_reply_to),
                references=json.dumps(parsed.references),
                subject=_clean(parsed.subject),
                from_addr=_clean(parsed.from_addr)[:254],
                from_name=_clean(parsed.from_name)[:255],
                to_addrs=json.dumps(parsed.to_addrs),
                cc_addrs=json.dumps(parsed.cc_addrs),
                sent_at=parsed.sent_at,
                direction=item.direction,
                text_body=_clean(parsed.text_body),
                html_body=_clean(parsed.html_body),
                size=parsed.size,
                has_attachments=bool(item.attachments),
                parse_errors=_clean("; ".join(parsed.errors)),
                matched=bool(item.client_ids),
                created_at=utcnow(),
            )
        ).returning(MailMessage.id)
        message_id = int(rows[0]["id"])
        for attachment in item.attachments:
            values: dict[str, Any] = {
                k: _clean(v) if isinstance(v, str) else v for k, v in attachment.items()
            }
            await MailAttachment.insert(MailAttachment(message=message_id, **values))
        report.stored += 1
    else:
        message_id = int(existing["id"])
        report.already_known += 1
    return message_id


async def record_sent(
    mailbox: dict[str, Any], raw: bytes, client_ids: list[int], author_id: int | None
) -> int | None:
    """A message the CRM has just sent (outgoing side), stored and put on the clients'
    cards like a synced one but without a server location: the sync of Sent adds that."""
    item = await _prepare(0, raw, SENT, mailbox, Matcher(await own_addresses()), SyncReport())
    if item is None:
        return None
    item.direction = "out"
    ids = [*client_ids, *(c for c in item.client_ids if c not in client_ids)]
    async with write():
        message_id = await store_message(item, SyncReport())
        await link_clients(message_id, ids, author_id)
    return message_id


async def link_clients(message_id: int, client_ids: list[int], author_id: int | None = None) -> int:
    """Show a message on clients' cards (Mail tab + one timeline entry each), once.

    Called inside the caller's transaction; returns how many new links were made.
    """
    if not client_ids:
        return 0
    message = (
        await MailMessage.select(
            MailMessage.id,
            MailMessage.subject,
            MailMessage.from_addr,
            MailMessage.from_name,
            MailMessage.direction,
            MailMessage.sent_at,
            MailMessage.text_body,
        )
        .where(MailMessage.id == message_id)
        .first()
    )
    if message is None:
        return 0
    linked = {
        r["client"]
        for r in await MailMessageClient.select(MailMessageClient.client).where(
            MailMessageClient.message == message_id
        )
    }
    added = 0
    for client_id in client_ids:
        if client_id in linked:
            continue
        await MailMessageClient.insert(MailMessageClient(message=message_id, client=client_id))
        await add_entry(
            client_id,
            TIMELINE_KIND,
            {
                "message": message_id,
                "subject": message["subject"],
                "from": message["from_name"] or message["from_addr"],
                "direction": message["direction"],
                "snippet": " ".join(message["text_body"].split())[:SNIPPET],
            },
            author_id=author_id,
            occurred_at=message["sent_at"],
        )
        added += 1
    if added:
        await MailMessage.update({MailMessage.matched: True}).where(MailMessage.id == message_id)
    return added
