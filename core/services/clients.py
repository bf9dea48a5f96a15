"""Clients (companies and private persons), their contacts, phones, e-mails and tags."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from piccolo.columns.combination import WhereRaw

from core import access, events
from core.db import fetch
from core.i18n import _
from core.runtime import get_runtime
from core.services import audit, deal_totals, timeline
from core.services.common import NotFound, as_utc, utcnow, write
from core.tables import Client, ClientTag, Contact, ContactPoint, User
from core.validation import (
    Form,
    choice,
    emails,
    inn,
    integer,
    kpp,
    phones,
    tags,
    text,
    try_normalize_phone,
)

KINDS = ("company", "person")
HIDEABLE = {
    "client.phones": ("phones", "phone"),
    "client.emails": ("emails", "email"),
    "client.inn": ("inn", "kpp"),
    "client.address": ("address",),
}
"""Field codes an admin may hide from a role, and the row keys each one blanks."""
SORTS = ("name", "activity", "created")
PAGE_SIZE = 50
_LEGAL_FORMS = re.compile(
    r"^(ооо|оао|зао|пао|ао|нао|ип|нко|ано|гуп|муп|фгуп|llc|ltd|inc|gmbh|jsc)\b\.?\s*", re.I
)


def search_key(name: str) -> str:
    """What name search matches against: lower case, ё as е, no legal form, no quotes.

    'ООО «Ромашка»' -> 'ромашка', so typing the name finds it whatever the legal form.
    """
    key = name.lower().replace("ё", "е")
    key = re.sub(r"[\"'«»“”„`]", "", key)
    key = _LEGAL_FORMS.sub("", key.strip())
    return re.sub(r"\s+", " ", key).strip()[:255]


@dataclass
class ClientInput:
    """A validated client form."""

    values: dict[str, Any]
    phones: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)


async def validate_client(data: dict[str, Any]) -> ClientInput:
    region = get_runtime().settings.default_region
    form = Form(data)
    form.field("kind", choice(KINDS), default="company")
    form.field("name", text(255, required=True))
    form.field("legal_name", text(255))
    form.field("inn", text(20), inn)
    form.field("kpp", text(20), kpp)
    form.field("address", text(500))
    form.field("source", text(64))
    form.field("notes", text(20000))
    form.field("phones", phones(region))
    form.field("emails", emails())
    form.field("tags", tags)
    responsible = form.field("responsible", integer(minimum=1))
    if responsible and not await User.exists().where(
        (User.id == responsible) & (User.active.eq(True))
    ):
        form.error("responsible", _("Choose an active user."))
    form.raise_if_invalid()
    cleaned = form.cleaned
    return ClientInput(
        values={k: cleaned[k] for k in cleaned if k not in ("phones", "emails", "tags")},
        phones=cleaned["phones"],
        emails=cleaned["emails"],
        tags=cleaned["tags"],
    )


async def find_duplicates(
    phone_list: list[str], email_list: list[str], inn_value: str, exclude_id: int | None = None
) -> list[dict[str, Any]]:
    """Existing clients sharing a phone, e-mail or INN: shown as a warning on create."""
    ids: set[int] = set()
    points = [("phone", p) for p in phone_list] + [("email", e) for e in email_list]
    for kind, value in points:
        rows = await ContactPoint.select(ContactPoint.client).where(
            (ContactPoint.kind == kind) & (ContactPoint.value == value)
        )
        ids.update(row["client"] for row in rows)
    if inn_value:
        rows = await Client.select(Client.id).where(Client.inn == inn_value)
        ids.update(row["id"] for row in rows)
    ids.discard(exclude_id)  # type: ignore[arg-type]
    if not ids:
        return []
    rows = await Client.select(Client.id, Client.name, Client.inn, Client.responsible).where(
        Client.id.is_in(sorted(ids)) & Client.deleted_at.is_null()
    )
    me = access.current()
    for row in rows:
        if not me.sees_owner("client", row["responsible"]):
            # The warning still matters, but a client the user may not see stays anonymous.
            row.update(id=None, name=None, inn=None)
        else:
            me.redact(row, HIDEABLE)
    return rows


async def _replace_points(client_id: int, phone_list: list[str], email_list: list[str]) -> None:
    await ContactPoint.delete().where(
        (ContactPoint.client == client_id) & ContactPoint.contact.is_null()
    )
    rows = [
        ContactPoint(client=client_id, kind=kind, value=value, position=i)
        for kind, values in (("phone", phone_list), ("email", email_list))
        for i, value in enumerate(values)
    ]
    if rows:
        await ContactPoint.insert(*rows)


async def _replace_tags(client_id: int, tag_list: list[str]) -> None:
    await ClientTag.delete().where(ClientTag.client == client_id)
    if tag_list:
        await ClientTag.insert(*[ClientTag(client=client_id, tag=tag) for tag in tag_list])


def _without_hidden(data: dict[str, Any]) -> dict[str, Any]:
    """What a role may not see it may not set either: hidden fields start empty."""
    me = access.current()
    return {
        k: v
        for k, v in data.items()
        if not any(me.hides(code) and k in keys for code, keys in HIDEABLE.items())
    }


def _with_hidden_kept(data: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """Editing a client must not wipe the fields the editor cannot see."""
    kept = dict(data)
    me = access.current()
    for code, keys in HIDEABLE.items():
        if me.hides(code):
            kept.update({key: before[key] for key in keys if key in before})
    return kept


def _audit_values(client: ClientInput) -> dict[str, Any]:
    return {**client.values, "phones": client.phones, "emails": client.emails, "tags": client.tags}


async def create_client(data: dict[str, Any], actor_id: int | None) -> int:
    client = await validate_client(_without_hidden(data))
    now = utcnow()
    async with write():
        rows = await Client.insert(
            Client(
                **client.values,
                name_search=search_key(client.values["name"]),
                created_by=actor_id,
                created_at=now,
                updated_at=now,
                last_activity_at=now,
            )
        ).returning(Client.id)
        client_id = int(rows[0]["id"])
        await _replace_points(client_id, client.phones, client.emails)
        await _replace_tags(client_id, client.tags)
        await timeline.add_entry(
            client_id, "client.created", {"name": client.values["name"]}, actor_id
        )
        await audit.record(
            "client.create",
            "client",
            client_id,
            client.values["name"],
            audit.diff({}, {k: v for k, v in _audit_values(client).items() if v not in ("", [])}),
        )
        events.emit(events.ClientCreated(client_id=client_id, actor_id=actor_id))
    return client_id


async def update_client(client_id: int, data: dict[str, Any], actor_id: int | None) -> None:
    before = await _visible_client(client_id)
    client = await validate_client(_with_hidden_kept(data, before))
    changes = audit.diff(before, _audit_values(client))
    changed = list(changes)
    if not changed:
        return
    async with write():
        await Client.update(
            {
                **{getattr(Client, key): value for key, value in client.values.items()},
                Client.name_search: search_key(client.values["name"]),
                Client.updated_at: utcnow(),
            }
        ).where(Client.id == client_id)
        await _replace_points(client_id, client.phones, client.emails)
        await _replace_tags(client_id, client.tags)
        await timeline.add_entry(client_id, "client.updated", {"fields": changed}, actor_id)
        await audit.record("client.update", "client", client_id, client.values["name"], changes)
        events.emit(
            events.ClientUpdated(client_id=client_id, changed=tuple(changed), actor_id=actor_id)
        )


async def delete_client(client_id: int, actor_id: int | None) -> None:
    """Soft delete: the card disappears, the data stays restorable by an admin."""
    client = await get_client(client_id)
    async with write():
        # Its deals leave the board with it (before the client is marked deleted).
        await deal_totals.add(
            deal_totals.negated(await deal_totals.of_deals("c.id = {}", client_id))
        )
        await Client.update({Client.deleted_at: utcnow()}).where(Client.id == client_id)
        await audit.record("client.delete", "client", client_id, client["name"])
        events.emit(events.ClientDeleted(client_id=client_id, actor_id=actor_id))


async def get_client(client_id: int) -> dict[str, Any]:
    """The client as the current user may see it; NotFound if they may not (no id leaks)."""
    return access.current().redact(await _visible_client(client_id), HIDEABLE)


async def _visible_client(client_id: int) -> dict[str, Any]:
    row = await _load_client(client_id)
    me = access.current()
    if not me.sees_owner("client", row["responsible"]):
        raise NotFound(client_id)
    me.remember_visible(client_id)
    return row


async def ensure_visible(client_id: int) -> None:
    """NotFound unless the client exists and the current user may see it (one small query,
    none when this request already loaded the client)."""
    me = access.current()
    if client_id in me.checked_clients:
        return
    row = (
        await Client.select(Client.responsible)
        .where((Client.id == client_id) & Client.deleted_at.is_null())
        .first()
    )
    if row is None or not me.sees_owner("client", row["responsible"]):
        raise NotFound(client_id)
    me.remember_visible(client_id)


# The card opens with this: the client, its own phones and e-mails and its tags in one
# round trip (one row per point or tag, the client's columns repeated), as raw SQL
# because building three Piccolo queries cost more than running them.
_CLIENT_SQL = (
    "SELECT c.*, u.full_name AS responsible_name, extra.kind AS extra_kind, "
    "extra.value AS extra_value FROM core_client c "
    "LEFT JOIN core_user u ON u.id = c.responsible "
    "LEFT JOIN (SELECT kind, value, position FROM core_contact_point "
    "WHERE client = {} AND contact IS NULL "
    "UNION ALL SELECT 'tag', tag, 0 FROM core_client_tag WHERE client = {}) extra ON 1 = 1 "
    "WHERE c.id = {} AND c.deleted_at IS NULL ORDER BY extra.position, extra.value"
)


async def _load_client(client_id: int) -> dict[str, Any]:
    rows = await fetch(_CLIENT_SQL, client_id, client_id, client_id)
    if not rows:
        raise NotFound(client_id)
    extras = [(r.pop("extra_kind"), r.pop("extra_value")) for r in rows]
    row = rows[0]
    row["phones"] = [value for kind, value in extras if kind == "phone"]
    row["emails"] = [value for kind, value in extras if kind == "email"]
    row["tags"] = [value for kind, value in extras if kind == "tag"]
    for key in ("created_at", "updated_at", "last_activity_at", "deleted_at"):
        row[key] = as_utc(row[key])
    return row


# --- list and search ----------------------------------------------------------------


@dataclass
class ClientQuery:
    search: str = ""
    responsible: int | None = None
    tag: str = ""
    source: str = ""
    sort: str = "name"
    cursor: str = ""
    size: int = PAGE_SIZE


MATCH_LIMIT = 1000
"""Clients a phone or e-mail search considers at most (a shared office number...)."""


async def _points_matching(kind: str, value: str, prefix: bool = False) -> list[int]:
    condition = (ContactPoint.kind == kind) & (
        (ContactPoint.value >= value) & (ContactPoint.value < value + "\uffff")
        if prefix
        else ContactPoint.value == value
    )
    rows = await ContactPoint.select(ContactPoint.client).where(condition).limit(MATCH_LIMIT)
    return sorted({row["client"] for row in rows})


FRAGMENT_MIN = 3
"""Characters of a name search from which it matches anywhere in the name (a trigram
index needs three); shorter ones match the start."""
FRAGMENT_LIMIT = 1000
"""Most names a fragment may match. Sorting every name that contains 'сток' (10,000 at
a million clients) costs a hundred milliseconds: a fragment that common matches name
starts only, until more is typed ('сток-57': 99 names)."""


async def _name_condition(key: str) -> Any:
    """Names that start with ``key``, or from FRAGMENT_MIN characters on, contain it:
    'сток' finds 'Восток-57', 'иван' finds 'Петров Иван'.

    The matching ids are read first through the trigram index (pg_trgm on PostgreSQL,
    FTS5 on SQLite; migration core_2026_11_23t08), as a phone's are: a list query
    filtering on the fragment would walk the name index until the matches turn up
    (1.1 s for 'сток' at a million clients, all of them under "в"). Whose clients they
    are is left to the list query: narrowing the id query to a manager's clients made
    PostgreSQL combine two large bitmaps (20-60 ms), where reading the first matches
    stops early.
    """
    prefix = WhereRaw(
        "(core_client.name_search >= {} AND core_client.name_search < {})", key, key + "\uffff"
    )
    fragment = re.sub(r"[%_\\]", "", key)  # LIKE's wildcards never come from the user
    if len(fragment) < FRAGMENT_MIN:
        return prefix
    rows = await fetch(
        "SELECT rowid AS id FROM core_client_name_fts WHERE name_search LIKE {} LIMIT {}"
        if get_runtime().settings.is_sqlite
        else "SELECT id FROM core_client WHERE name_search LIKE {} LIMIT {}",
        f"%{fragment}%",
        FRAGMENT_LIMIT + 1,
    )
    if len(rows) > FRAGMENT_LIMIT:
        return prefix
    ids = ", ".join(str(int(row["id"])) for row in rows) or "0"
    return WhereRaw(f"core_client.id IN ({ids})")


async def _search_condition(raw: str) -> Any:
    """What the user typed is an e-mail, a phone or INN, or (part of) a name.

    Phones and e-mails are resolved to client ids first (index on contact points),
    so the list query is a handful of primary-key lookups instead of a walk of the
    name index that checks each client against a sub-query.
    """
    q = raw.strip()
    if "@" in q:
        return Client.id.is_in(await _points_matching("email", q.lower(), prefix=True) or [0])
    digits = re.sub(r"\D", "", q)
    if len(digits) >= 5 and re.fullmatch(r"[\d\s()+\-.]+", q):
        phone = try_normalize_phone(q, get_runtime().settings.default_region)
        ids = await _points_matching("phone", phone) if phone else []
        condition: Any = Client.id.is_in(ids or [0])
        if len(digits) in (10, 12) and digits == q:
            condition = condition | (Client.inn == digits)
        return condition
    return await _name_condition(search_key(q))


def _encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, default=str).encode()).decode()


def _decode_cursor(cursor: str) -> list[Any] | None:
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return values if isinstance(values, list) and len(values) == 2 else None
    except ValueError:
        return None


def _sort_column(sort: str) -> Any:
    return {
        "name": Client.name_search,
        "activity": Client.last_activity_at,
        "created": Client.created_at,
    }[sort]


async def list_clients(query: ClientQuery) -> tuple[list[dict[str, Any]], str | None]:
    """One keyset page: never OFFSET, so page 1000 costs what page 1 does."""
    sort = query.sort if query.sort in SORTS else "name"
    column = _sort_column(sort)
    ascending = sort == "name"
    select = Client.select(
        Client.id,
        Client.kind,
        Client.name,
        Client.name_search,
        Client.inn,
        Client.source,
        Client.last_activity_at,
        Client.created_at,
        Client.responsible,
    ).where(Client.deleted_at.is_null())
    visible = access.current().owner_filter("client", Client.responsible)
    if visible is not None:
        select = select.where(visible)
    if query.search.strip():
        select = select.where(await _search_condition(query.search))
    if query.responsible:
        select = select.where(Client.responsible == query.responsible)
    if query.tag:
        select = select.where(
            WhereRaw(
                "core_client.id IN (SELECT client FROM core_client_tag WHERE tag = {})",
                query.tag.lower(),
            )
        )
    if query.source:
        select = select.where(Client.source == query.source)
    position = _decode_cursor(query.cursor) if query.cursor else None
    if position:
        value, last_id = position
        if sort != "name":
            value = datetime.fromisoformat(value)
        select = select.where(_after(column, value, int(last_id), ascending))
    rows = await select.order_by(column, Client.id, ascending=ascending).limit(query.size + 1)
    page_rows = rows[: query.size]
    # Independent reads: concurrent on PostgreSQL's pool.
    await asyncio.gather(_attach_primary_points(page_rows), _attach_responsible_names(page_rows))
    me = access.current()
    for row in page_rows:
        me.redact(row, HIDEABLE)
    next_cursor = None
    if len(rows) > query.size:
        last = page_rows[-1]
        sort_value = last[column._meta.name]
        next_cursor = _encode_cursor(
            [
                as_utc(sort_value).isoformat() if isinstance(sort_value, datetime) else sort_value,
                last["id"],
            ]
        )
    return page_rows, next_cursor


def _after(column: Any, value: Any, last_id: int, ascending: bool) -> Any:
    """Rows after the cursor. PostgreSQL gets a row comparison, an index range it reads
    straight from the cursor on; the OR form made its generic plan scan every row."""
    if get_runtime().settings.is_sqlite:
        if ascending:
            return (column > value) | ((column == value) & (Client.id > last_id))
        return (column < value) | ((column == value) & (Client.id < last_id))
    sign = ">" if ascending else "<"
    return WhereRaw(
        f"(core_client.{column._meta.db_column_name}, core_client.id) {sign} ({{}}, {{}})",
        value,
        last_id,
    )


async def _attach_primary_points(rows: list[dict[str, Any]]) -> None:
    """First phone and e-mail of each row in one query (no N+1)."""
    if not rows:
        return
    points = await ContactPoint.select(
        ContactPoint.client, ContactPoint.kind, ContactPoint.value
    ).where(
        ContactPoint.client.is_in([row["id"] for row in rows])
        & ContactPoint.contact.is_null()
        & (ContactPoint.position == 0)
    )
    by_client: dict[int, dict[str, str]] = {}
    for point in points:
        by_client.setdefault(point["client"], {})[point["kind"]] = point["value"]
    for row in rows:
        row["phone"] = by_client.get(row["id"], {}).get("phone", "")
        row["email"] = by_client.get(row["id"], {}).get("email", "")
        row["last_activity_at"] = as_utc(row["last_activity_at"])


async def _attach_responsible_names(rows: list[dict[str, Any]]) -> None:
    """Names in a second small query: joining users into the page query made the planner
    sort every match instead of reading the first page straight off the index."""
    ids = sorted({row["responsible"] for row in rows})
    if not ids:
        return
    names = {
        user["id"]: user["full_name"]
        for user in await User.select(User.id, User.full_name).where(User.id.is_in(ids))
    }
    for row in rows:
        row["responsible_name"] = names.get(row["responsible"])


async def lookup(phone: str | None, email: str | None) -> int | None:
    """The client a phone or e-mail belongs to, contacts' points included.

    An e-mail with no exact match falls back to its corporate domain when exactly one
    client has addresses there; free mail domains (``FREE_MAIL_DOMAINS``) never match.
    """
    for kind, value in (("phone", phone), ("email", email)):
        if not value:
            continue
        row = await fetch(
            "SELECT p.client FROM core_contact_point p JOIN core_client c ON c.id = p.client "
            "WHERE p.kind = {} AND p.value = {} AND c.deleted_at IS NULL "
            "ORDER BY c.last_activity_at DESC LIMIT 1",
            kind,
            value,
        )
        if row:
            return int(row[0]["client"])
    if email:
        return await _lookup_by_domain(email)
    return None


# Public mail services: an address there says nothing about the company behind it,
# so these domains never match a client by domain (only by the exact address).
FREE_MAIL_DOMAINS = frozenset(
    {
        "gmail.com",
        "googlemail.com",
        "mail.ru",
        "bk.ru",
        "list.ru",
        "inbox.ru",
        "internet.ru",
        "xmail.ru",
        "yandex.ru",
        "yandex.com",
        "yandex.by",
        "yandex.kz",
        "yandex.ua",
        "ya.ru",
        "narod.ru",
        "rambler.ru",
        "lenta.ru",
        "autorambler.ru",
        "myrambler.ru",
        "ro.ru",
        "outlook.com",
        "hotmail.com",
        "live.com",
        "msn.com",
        "yahoo.com",
        "ymail.com",
        "icloud.com",
        "me.com",
        "mac.com",
        "aol.com",
        "gmx.com",
        "gmx.de",
        "gmx.net",
        "web.de",
        "mail.com",
        "proton.me",
        "protonmail.com",
        "pm.me",
        "tutanota.com",
        "zoho.com",
        "qip.ru",
        "ukr.net",
        "i.ua",
        "meta.ua",
        "tut.by",
        "mail.ua",
    }
)


async def _lookup_by_domain(email: str) -> int | None:
    """The one client whose e-mails share this corporate domain (None if several)."""
    domain = email.rpartition("@")[2]
    if not domain or domain in FREE_MAIL_DOMAINS:
        return None
    rows = await fetch(
        "SELECT DISTINCT p.client FROM core_contact_point p "
        "JOIN core_client c ON c.id = p.client "
        "WHERE p.kind = 'email' AND p.value LIKE {} AND c.deleted_at IS NULL LIMIT 2",
        "%@" + domain.replace("%", ""),
    )
    return int(rows[0]["client"]) if len(rows) == 1 else None


async def find_client(phone: str | None = None, email: str | None = None) -> int | None:
    """Which client a phone (any format) or e-mail belongs to, asking every plugin."""
    region = get_runtime().settings.default_region
    normalized_phone = try_normalize_phone(phone, region) if phone else None
    normalized_email = email.strip().lower() if email else None
    if not normalized_phone and not normalized_email:
        return None
    return await get_runtime().plugins.first_result(
        "lookup_client", phone=normalized_phone, email=normalized_email
    )


async def _distinct(table: str, column: str, limit: int = 200) -> list[str]:
    """Distinct values read off the column's index, one index probe per value.

    A plain SELECT DISTINCT reads every row: 170 ms at a million clients on every
    list page. This "loose index scan" costs one probe per distinct value instead.
    """
    rows = await fetch(
        f"WITH RECURSIVE found(value) AS ("
        f" SELECT MIN({column}) FROM {table} WHERE {column} > ''"
        f" UNION ALL SELECT (SELECT MIN({column}) FROM {table} WHERE {column} > found.value)"
        f" FROM found WHERE found.value IS NOT NULL"
        f") SELECT value FROM found WHERE value IS NOT NULL LIMIT {int(limit)}"
    )
    return [row["value"] for row in rows]


async def tag_names() -> list[str]:
    return await _distinct("core_client_tag", "tag")


async def source_names() -> list[str]:
    return await _distinct("core_client", "source")


# --- contacts -------------------------------------------------------------------------


async def validate_contact(data: dict[str, Any]) -> tuple[dict[str, Any], list[str], list[str]]:
    region = get_runtime().settings.default_region
    form = Form(data)
    form.field("name", text(255, required=True))
    form.field("position", text(255))
    form.field("notes", text(5000))
    form.field("phones", phones(region))
    form.field("emails", emails())
    form.raise_if_invalid()
    values = {k: form.cleaned[k] for k in ("name", "position", "notes")}
    return values, form.cleaned["phones"], form.cleaned["emails"]


_CONTACT_HIDEABLE = {"client.phones": ("phones",), "client.emails": ("emails",)}


async def save_contact(
    client_id: int, data: dict[str, Any], actor_id: int | None, contact_id: int | None = None
) -> int:
    await ensure_visible(client_id)
    me = access.current()
    before: dict[str, Any] = {}
    if contact_id is not None:
        before = await _get_contact(client_id, contact_id)
        before.update(await _contact_points(contact_id))
    hidden = {key for code, keys in _CONTACT_HIDEABLE.items() if me.hides(code) for key in keys}
    data = {k: v for k, v in data.items() if k not in hidden}
    data.update({key: before.get(key, []) for key in hidden})
    values, phone_list, email_list = await validate_contact(data)
    changes = audit.diff(before, {**values, "phones": phone_list, "emails": email_list})
    async with write():
        if contact_id is None:
            rows = await Contact.insert(
                Contact(client=client_id, created_at=utcnow(), **values)
            ).returning(Contact.id)
            contact_id = int(rows[0]["id"])
            await timeline.add_entry(client_id, "contact.added", {"name": values["name"]}, actor_id)
        else:
            await _get_contact(client_id, contact_id)
            await Contact.update({getattr(Contact, k): v for k, v in values.items()}).where(
                Contact.id == contact_id
            )
            await ContactPoint.delete().where(ContactPoint.contact == contact_id)
        points = [
            ContactPoint(client=client_id, contact=contact_id, kind=kind, value=value, position=i)
            for kind, items in (("phone", phone_list), ("email", email_list))
            for i, value in enumerate(items)
        ]
        if points:
            await ContactPoint.insert(*points)
        action = "contact.create" if not before else "contact.update"
        await audit.record(action, "contact", contact_id, values["name"], changes)
        events.emit(
            events.ClientUpdated(client_id=client_id, changed=("contacts",), actor_id=actor_id)
        )
    return contact_id


async def _contact_points(contact_id: int) -> dict[str, list[str]]:
    points = (
        await ContactPoint.select(ContactPoint.kind, ContactPoint.value)
        .where(ContactPoint.contact == contact_id)
        .order_by(ContactPoint.position)
    )
    return {
        "phones": [p["value"] for p in points if p["kind"] == "phone"],
        "emails": [p["value"] for p in points if p["kind"] == "email"],
    }


async def _get_contact(client_id: int, contact_id: int) -> dict[str, Any]:
    await ensure_visible(client_id)
    row = (
        await Contact.select()
        .where(
            (Contact.id == contact_id)
            & (Contact.client == client_id)
            & Contact.deleted_at.is_null()
        )
        .first()
    )
    if row is None:
        raise NotFound(contact_id)
    return row


async def delete_contact(client_id: int, contact_id: int, actor_id: int | None) -> None:
    contact = await _get_contact(client_id, contact_id)
    async with write():
        await Contact.update({Contact.deleted_at: utcnow()}).where(Contact.id == contact_id)
        await ContactPoint.delete().where(ContactPoint.contact == contact_id)
        await timeline.add_entry(client_id, "contact.removed", {"name": contact["name"]}, actor_id)
        await audit.record("contact.delete", "contact", contact_id, contact["name"])


# The contacts and their phones and e-mails in one round trip: one row per point (a
# contact without any has one row of NULLs); the client's own condition lets the
# (client) index find the points.
_CONTACTS_SQL = (
    "SELECT ct.*, p.kind AS point_kind, p.value AS point_value FROM core_contact ct "
    "LEFT JOIN core_contact_point p ON p.contact = ct.id AND p.client = {} "
    "WHERE ct.client = {} AND ct.deleted_at IS NULL ORDER BY ct.name, ct.id, p.position"
)


async def list_contacts(client_id: int) -> list[dict[str, Any]]:
    await ensure_visible(client_id)
    contacts: dict[int, dict[str, Any]] = {}
    for row in await fetch(_CONTACTS_SQL, client_id, client_id):
        kind, value = row.pop("point_kind"), row.pop("point_value")
        contact = contacts.setdefault(row["id"], {**row, "phones": [], "emails": []})
        if kind in ("phone", "email"):
            contact[f"{kind}s"].append(value)
    me = access.current()
    for contact in contacts.values():
        contact["created_at"] = as_utc(contact["created_at"])
        me.redact(contact, _CONTACT_HIDEABLE)
    return list(contacts.values())


async def add_note(
    client_id: int, note: str, actor_id: int | None, deal_id: int | None = None
) -> int:
    await ensure_visible(client_id)
    form = Form({"text": note})
    form.field("text", text(10000, required=True))
    form.raise_if_invalid()
    async with write():
        entry_id = await timeline.add_entry(
            client_id, "note", {"text": form.cleaned["text"]}, actor_id, deal_id=deal_id
        )
        await audit.record(
            "note.create",
            "client",
            client_id,
            form.cleaned["text"][:200],
            {"deal": [None, deal_id]},
        )
        return entry_id
