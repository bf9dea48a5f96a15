"""Reading stored mail with the user's visibility, and sorting "Unsorted" mail.

A user sees a message when it is on the card of a client they can see, or when it
sits in a mailbox they may read (their own personal one; shared ones with
``mail.shared``; all with ``mail.mailboxes.manage``). Everything else is a 404.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from core import access
from core.services import clients
from core.services.common import NotFound, as_utc, utcnow, write
from plugins.mail import mailboxes
from plugins.mail.sync.engine import link_clients, own_addresses
from plugins.mail.tables import (
    MailAddressLink,
    MailAttachment,
    MailLocation,
    MailMessage,
    MailMessageClient,
)

LIST_COLUMNS = (
    MailMessage.id,
    MailMessage.subject,
    MailMessage.from_addr,
    MailMessage.from_name,
    MailMessage.to_addrs,
    MailMessage.sent_at,
    MailMessage.direction,
    MailMessage.thread_key,
    MailMessage.has_attachments,
)


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for key in ("to_addrs", "cc_addrs", "references"):
        if isinstance(row.get(key), str):
            row[key] = json.loads(row[key] or "[]")
    if "sent_at" in row:
        row["sent_at"] = as_utc(row["sent_at"])
    return row


async def for_client(client_id: int) -> list[dict[str, Any]]:
    """The client's correspondence as threads, newest thread first (404 if not visible)."""
    await clients.get_client(client_id)
    rows = await (
        MailMessage.select(*LIST_COLUMNS)
        .where(
            MailMessage.id.is_in(
                MailMessageClient.select(MailMessageClient.message).where(
                    MailMessageClient.client == client_id
                )
            )
        )
        .order_by(MailMessage.sent_at, ascending=False)
        .limit(500)
    )
    threads: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
    for row in rows:
        threads.setdefault(row["thread_key"], []).append(_decode(row))
    return [
        {"messages": list(reversed(items)), "latest": items[0], "subject": items[-1]["subject"]}
        for items in threads.values()
    ]


async def _in_visible_mailbox(message_id: int) -> bool:
    ids = await mailboxes.visible_ids()
    query = MailLocation.exists().where(MailLocation.message == message_id)
    if ids is not None:
        query = query.where(MailLocation.mailbox.is_in(ids or [0]))
    return bool(await query)


async def _on_visible_client(message_id: int) -> bool:
    query = MailMessageClient.exists().where(
        (MailMessageClient.message == message_id) & MailMessageClient.client.deleted_at.is_null()
    )
    visible = access.current().client_filter("client", MailMessageClient.client)
    if visible is not None:
        query = query.where(visible)
    return bool(await query)


async def get_visible(message_id: int) -> dict[str, Any]:
    """The full message if the current user may read it; NotFound otherwise."""
    row = await MailMessage.select().where(MailMessage.id == message_id).first()
    if row is None or not (
        await _on_visible_client(message_id) or await _in_visible_mailbox(message_id)
    ):
        raise NotFound(message_id)
    row = _decode(row)
    row["attachments"] = await MailAttachment.select().where(MailAttachment.message == message_id)
    linked = MailMessageClient.select(
        MailMessageClient.client.as_alias("id"), MailMessageClient.client.name.as_alias("name")
    ).where(
        (MailMessageClient.message == message_id) & MailMessageClient.client.deleted_at.is_null()
    )
    visible = access.current().client_filter("client", MailMessageClient.client)
    row["clients"] = await (linked.where(visible) if visible is not None else linked)
    return row


async def attachment(
    message_id: int, attachment_id: int | None = None, cid: str = ""
) -> dict[str, Any]:
    """An attachment of a message the user may read (by id, or by Content-ID for inline images)."""
    await get_visible(message_id)
    query = MailAttachment.select().where(MailAttachment.message == message_id)
    query = (
        query.where(MailAttachment.id == attachment_id)
        if attachment_id
        else query.where(MailAttachment.content_id == cid)
    )
    row = await query.first()
    if row is None:
        raise NotFound(attachment_id or cid)
    return row


async def unsorted(limit: int = 100) -> list[dict[str, Any]]:
    """Unmatched mail in the mailboxes the user may read, newest first."""
    ids = await mailboxes.visible_ids()
    located = MailLocation.select(MailLocation.message)
    if ids is not None:
        located = located.where(MailLocation.mailbox.is_in(ids or [0]))
    rows = await (
        MailMessage.select(*LIST_COLUMNS, MailMessage.cc_addrs)
        .where(MailMessage.matched.eq(False) & MailMessage.id.is_in(located))
        .order_by(MailMessage.sent_at, ascending=False)
        .limit(limit)
    )
    ours = await own_addresses()
    for row in _decoded(rows):
        row["counterparts"] = counterparts(row, ours)
    return rows


def _decoded(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [_decode(r) for r in rows]


def counterparts(row: dict[str, Any], ours: set[str]) -> list[str]:
    """The other side of a message: the addresses that are not the install's own."""
    addresses = [row["from_addr"], *row.get("to_addrs", []), *row.get("cc_addrs", [])]
    return [a for a in dict.fromkeys(addresses) if a and a not in ours]


async def link_address(message_id: int, address: str, client_id: int, actor_id: int | None) -> int:
    """Remember ``address`` belongs to the client and file all its unsorted mail there.

    Returns how many messages were moved onto the client's card.
    """
    await clients.ensure_visible(client_id)
    address = address.strip().lower()
    message = await get_visible(message_id)
    if address not in counterparts(message, await own_addresses()):
        raise NotFound(address)
    pending = await MailMessage.select(
        MailMessage.id, MailMessage.from_addr, MailMessage.to_addrs, MailMessage.cc_addrs
    ).where(MailMessage.matched.eq(False))
    moved = 0
    async with write():
        existing = await MailAddressLink.select().where(MailAddressLink.address == address).first()
        if existing is None:
            await MailAddressLink.insert(
                MailAddressLink(
                    address=address, client=client_id, created_by=actor_id, created_at=utcnow()
                )
            )
        else:
            await MailAddressLink.update({MailAddressLink.client: client_id}).where(
                MailAddressLink.id == existing["id"]
            )
        for row in _decoded(pending):
            if address in (row["from_addr"], *row["to_addrs"], *row["cc_addrs"]):
                moved += await link_clients(row["id"], [client_id], author_id=actor_id)
    return moved


async def create_client_from(message_id: int, address: str, actor_id: int) -> int:
    """A new client from an unsorted message's sender (name and e-mail prefilled)."""
    message = await get_visible(message_id)
    address = address.strip().lower()
    if address not in counterparts(message, await own_addresses()):
        raise NotFound(address)
    name = (
        message["from_name"]
        if address == message["from_addr"] and message["from_name"]
        else address
    )
    client_id = await clients.create_client(
        {"name": name, "emails": address, "responsible": actor_id, "source": "e-mail"}, actor_id
    )
    await link_address(message_id, address, client_id, actor_id)
    return client_id
