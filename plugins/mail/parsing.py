"""Turning raw RFC 5322 bytes into what the CRM stores, whatever the sender got wrong.

Real mail is often broken: 8-bit headers in Windows-1251 or KOI8-R without an encoded
word, unknown charsets, truncated MIME, no Message-ID. ``parse`` never raises: what it
cannot read is decoded as well as it can be and noted in ``errors`` (the sync logs it).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.utils import getaddresses, parseaddr, parsedate_to_datetime

SYNTHETIC_DOMAIN = "synthetic.kartoteka.invalid"
FALLBACK_CHARSETS = ("utf-8", "cp1251", "koi8-r")
_CYRILLIC_LOWER = re.compile("[а-яё]")
_CYRILLIC_UPPER = re.compile("[А-ЯЁ]")
_MSGID = re.compile(r"<[^<>\s]+>")


@dataclass
class ParsedAttachment:
    filename: str
    content_type: str
    content_id: str
    payload: bytes


@dataclass
class ParsedMessage:
    message_id: str
    synthetic_id: bool
    in_reply_to: str
    references: list[str]
    subject: str
    from_addr: str
    from_name: str
    to_addrs: list[str]
    cc_addrs: list[str]
    sent_at: datetime
    text_body: str
    html_body: str
    size: int
    attachments: list[ParsedAttachment] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return message_key(self.message_id)

    def participants(self) -> list[str]:
        """Every address on the message, lower-cased, sender first, no duplicates."""
        seen: dict[str, None] = {}
        for address in [self.from_addr, *self.to_addrs, *self.cc_addrs]:
            if address:
                seen.setdefault(address, None)
        return list(seen)


def message_key(message_id: str) -> str:
    """The idempotency key of a message: the hash of its Message-ID (one row per mail).

    The outgoing side stores what it sends under the same key, so the later sync of
    the Sent folder finds the row instead of adding a second one.
    """
    return hashlib.sha256(normalize_message_id(message_id).encode("utf-8")).hexdigest()


def normalize_message_id(value: str) -> str:
    found = _MSGID.search(value or "")
    return found.group(0) if found else (value or "").strip()


def decode_bytes(raw: bytes, declared: str | None = None) -> str:
    """Text of unknown or wrong charset: the declared one, UTF-8, then the better Cyrillic guess."""
    for charset in (declared, "utf-8"):
        if not charset:
            continue
        try:
            return raw.decode(charset)
        except (LookupError, UnicodeDecodeError):
            continue
    return _guess_cyrillic(raw)


def _guess_cyrillic(raw: bytes) -> str:
    """cp1251 or KOI8-R: real Russian text is mostly lower case in the right one."""
    best, best_score = raw.decode("latin-1"), -1
    for charset in ("cp1251", "koi8-r"):
        text = raw.decode(charset, errors="replace")
        score = len(_CYRILLIC_LOWER.findall(text)) - len(_CYRILLIC_UPPER.findall(text))
        if score > best_score:
            best, best_score = text, score
    return best


def _header(msg: Message, name: str, errors: list[str]) -> str:
    """A header as text: encoded words decoded, raw 8-bit bytes guessed, never raises."""
    raw_values = [value for key, value in msg.raw_items() if key.lower() == name.lower()]
    if not raw_values:
        return ""
    raw = str(raw_values[0])
    try:
        if any("\udc80" <= ch <= "\udcff" for ch in raw):  # raw 8-bit bytes in the header
            return decode_bytes(raw.encode("ascii", "surrogateescape")).strip()
        parts = []
        for chunk, charset in decode_header(raw):
            if isinstance(chunk, bytes):
                parts.append(decode_bytes(chunk, charset))
            else:
                parts.append(chunk)
        return re.sub(r"\s+", " ", "".join(parts)).strip()
    except Exception as exc:  # a header we cannot decode must not lose the message
        errors.append(f"header {name}: {exc}")
        try:
            return str(make_header(decode_header(raw)))
        except Exception:
            return raw.encode("ascii", "replace").decode("ascii")


def _addresses(value: str) -> list[tuple[str, str]]:
    return [(name, addr.strip().lower()) for name, addr in getaddresses([value]) if "@" in addr]


def _date(value: str, errors: list[str]) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        errors.append(f"unreadable Date: {value[:80]!r}")
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _part_text(part: Message, errors: list[str]) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset()
    text = decode_bytes(payload, charset)
    if charset and text and charset.lower() not in ("utf-8", "us-ascii", "ascii"):
        try:
            payload.decode(charset)
        except (LookupError, UnicodeDecodeError):
            errors.append(f"body charset {charset!r} unusable, guessed")
    return text


def _filename(part: Message, errors: list[str]) -> str:
    try:
        name = part.get_filename()
    except Exception as exc:
        errors.append(f"attachment name: {exc}")
        name = None
    if name and any("\udc80" <= ch <= "\udcff" for ch in name):
        name = decode_bytes(name.encode("ascii", "surrogateescape"))
    return (name or "").strip()


def _walk(msg: Message, parsed: ParsedMessage) -> None:
    texts: list[str] = []
    htmls: list[str] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        try:
            content_type = part.get_content_type()
            disposition = part.get_content_disposition()
            filename = _filename(part, parsed.errors)
            is_body = disposition != "attachment" and not filename
            if is_body and content_type == "text/plain":
                texts.append(_part_text(part, parsed.errors))
            elif is_body and content_type == "text/html":
                htmls.append(_part_text(part, parsed.errors))
            else:
                payload = part.get_payload(decode=True)
                if not isinstance(payload, bytes):
                    continue
                parsed.attachments.append(
                    ParsedAttachment(
                        filename=filename or f"part-{len(parsed.attachments) + 1}",
                        content_type=content_type,
                        content_id=(part.get("Content-ID") or "").strip().strip("<>"),
                        payload=payload,
                    )
                )
        except Exception as exc:  # one broken part must not cost the rest of the message
            parsed.errors.append(f"MIME part: {exc}")
    parsed.text_body = "\n\n".join(t for t in texts if t)
    parsed.html_body = "\n".join(h for h in htmls if h)


def _synthetic_id(msg: Message, raw: bytes) -> str:
    """A stable id for mail without Message-ID: the same message in two mailboxes (or
    synced twice) hashes the same, since it uses what the sender wrote, not the route."""
    digest = hashlib.sha256()
    for name in ("From", "To", "Cc", "Date", "Subject"):
        digest.update(str(msg.get(name, "")).encode("utf-8", "surrogateescape") + b"\0")
    header_end = raw.find(b"\r\n\r\n")
    if header_end < 0:
        header_end = raw.find(b"\n\n")
    digest.update(raw[header_end + 1 :] if header_end >= 0 else raw)
    return f"<{digest.hexdigest()[:40]}@{SYNTHETIC_DOMAIN}>"


def parse(raw: bytes, fallback_date: datetime | None = None) -> ParsedMessage:
    """Everything the CRM keeps of a raw message; never raises on malformed input."""
    errors: list[str] = []
    msg: Message
    try:
        msg = message_from_bytes(raw, policy=policy.compat32)
    except Exception as exc:  # pragma: no cover - the compat32 parser is very lenient
        errors.append(f"unparseable message: {exc}")
        msg = EmailMessage()
    errors.extend(f"MIME defect: {type(d).__name__}" for d in msg.defects)

    message_id = normalize_message_id(_header(msg, "Message-ID", errors))
    synthetic = not message_id
    if synthetic:
        message_id = _synthetic_id(msg, raw)
        errors.append("no Message-ID, synthesised")
    references = _MSGID.findall(_header(msg, "References", errors))
    from_name, from_addr = parseaddr(_header(msg, "From", errors))
    sent_at = _date(_header(msg, "Date", errors), errors) or fallback_date or datetime.now(UTC)
    parsed = ParsedMessage(
        message_id=message_id,
        synthetic_id=synthetic,
        in_reply_to=normalize_message_id(_header(msg, "In-Reply-To", errors)),
        references=references,
        subject=_header(msg, "Subject", errors),
        from_addr=from_addr.strip().lower() if "@" in from_addr else "",
        from_name=from_name,
        to_addrs=[a for _, a in _addresses(_header(msg, "To", errors))],
        cc_addrs=[a for _, a in _addresses(_header(msg, "Cc", errors))],
        sent_at=sent_at.astimezone(UTC),
        text_body="",
        html_body="",
        size=len(raw),
        errors=errors,
    )
    _walk(msg, parsed)
    return parsed


def thread_root(parsed: ParsedMessage) -> str:
    """The Message-ID that names the thread when no stored parent is known."""
    if parsed.references:
        return parsed.references[0]
    return parsed.in_reply_to or parsed.message_id
