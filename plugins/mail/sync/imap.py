"""A read-only IMAP session on top of the standard library's imaplib.

Why imaplib: it is part of Python (no extra dependency to keep alive), speaks every
server we care about, and runs in a worker thread (``asyncio.to_thread``) so the event
loop is never blocked. Folders are opened with EXAMINE and bodies fetched with
BODY.PEEK[], so the sync cannot set \\Seen; no STORE, EXPUNGE, MOVE or COPY is ever
sent (this module has no method that would).
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import re
import ssl
from dataclasses import dataclass
from datetime import date

from plugins.mail.tables import PLAIN, SSL, STARTTLS

TIMEOUT = 60.0
SENT_NAMES = ("Sent", "Sent Items", "Sent Messages", "Sent Mail", "INBOX.Sent", "Отправленные")
_LIST_LINE = re.compile(rb'\((?P<flags>[^)]*)\) (?P<delim>"[^"]*"|NIL) (?P<name>.+)$')
_UID = re.compile(rb"UID (\d+)")
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


class ImapError(Exception):
    """A connection, login or protocol failure, worded for the user."""


@dataclass(frozen=True)
class ImapSettings:
    host: str
    port: int
    security: str
    user: str
    password: str


@dataclass(frozen=True)
class FolderState:
    name: str
    uidvalidity: int
    exists: int


def connect(settings: ImapSettings, timeout: float = TIMEOUT) -> imaplib.IMAP4:
    """A logged-in connection; ImapError with a readable reason otherwise."""
    try:
        if settings.security == SSL:
            conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                settings.host,
                settings.port,
                ssl_context=ssl.create_default_context(),
                timeout=timeout,
            )
        else:
            conn = imaplib.IMAP4(settings.host, settings.port, timeout=timeout)
            if settings.security == STARTTLS:
                conn.starttls(ssl.create_default_context())
            elif settings.security != PLAIN:
                raise ImapError(f"unknown security mode {settings.security!r}")
    except TimeoutError as exc:
        raise ImapError(
            f"IMAP server {settings.host}:{settings.port} did not answer in time"
        ) from exc
    except ssl.SSLError as exc:
        raise ImapError(
            f"TLS failed with {settings.host}:{settings.port}: {exc.reason or exc}"
        ) from exc
    except (OSError, imaplib.IMAP4.error) as exc:
        raise ImapError(
            f"cannot connect to IMAP server {settings.host}:{settings.port}: {exc}"
        ) from exc
    try:
        conn.login(settings.user, settings.password)
    except imaplib.IMAP4.error as exc:
        _close(conn)
        raise ImapError(f"IMAP login refused for {settings.user}: {_text(exc)}") from exc
    return conn


def _text(exc: BaseException) -> str:
    value = exc.args[0] if exc.args else exc
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _close(conn: imaplib.IMAP4) -> None:
    with contextlib.suppress(OSError, imaplib.IMAP4.error):
        conn.logout()


def encode_folder(name: str) -> str:
    """A folder name in IMAP's modified UTF-7 (RFC 3501 5.1.3), quoted for commands."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            chunk = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(chunk).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    encoded = "".join(out)
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


def decode_folder(raw: str) -> str:
    """A server folder name (modified UTF-7) as text for the user."""

    def unpack(match: re.Match[str]) -> str:
        body = match.group(1)
        if not body:
            return "&"
        padded = body.replace(",", "/") + "=" * (-len(body) % 4)
        return base64.b64decode(padded).decode("utf-16-be")

    return re.sub(r"&([^-]*)-", unpack, raw)


class Session:
    """One logged-in, read-only IMAP session (use as a context manager)."""

    def __init__(self, settings: ImapSettings, timeout: float = TIMEOUT) -> None:
        self.conn = connect(settings, timeout)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        _close(self.conn)

    def folders(self) -> list[tuple[str, set[str]]]:
        """(server name, flags) of every folder; flags include SPECIAL-USE ones (\\Sent)."""
        typ, data = self.conn.list('""', "*")
        if typ != "OK":
            raise ImapError(f"LIST failed: {data!r}")
        found = []
        for line in data:
            if isinstance(line, tuple):  # a literal name: (b'(... "/" {5}', b'Sent')
                line = line[0].rsplit(b"{", 1)[0] + b'"' + line[1] + b'"'
            match = _LIST_LINE.match(line or b"")
            if not match:
                continue
            name = match.group("name").decode("utf-8", "replace").strip()
            if name.startswith('"') and name.endswith('"'):
                name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            flags = {f.lower() for f in match.group("flags").decode().split()}
            found.append((name, flags))
        return found

    def detect_sent(self) -> str | None:
        """The Sent folder: the one flagged \\Sent (RFC 6154), else a usual name."""
        folders = self.folders()
        for name, flags in folders:
            if "\\sent" in flags:
                return name
        by_name = {decode_folder(name).lower(): name for name, flags in folders}
        for candidate in SENT_NAMES:
            if candidate.lower() in by_name:
                return by_name[candidate.lower()]
        return None

    def examine(self, name: str) -> FolderState:
        """Open a folder read-only (EXAMINE): nothing we do can change its flags."""
        quoted = name if name.startswith('"') else _quote(name)
        typ, data = self.conn.select(quoted, readonly=True)
        if typ != "OK":
            raise ImapError(f"cannot open folder {decode_folder(name)!r}: {data!r}")
        uidvalidity = self.conn.response("UIDVALIDITY")[1]
        if not uidvalidity or uidvalidity[0] is None:
            raise ImapError(f"server gave no UIDVALIDITY for {decode_folder(name)!r}")
        return FolderState(name=name, uidvalidity=int(uidvalidity[0]), exists=int(data[0] or 0))

    def uids_after(self, last_uid: int, since: date | None = None) -> list[int]:
        """UIDs above the cursor (and on/after ``since``), ascending."""
        criteria = [f"UID {last_uid + 1}:*"]
        if since is not None:
            criteria.append(f"SINCE {since.day}-{_MONTHS[since.month - 1]}-{since.year}")
        typ, data = self.conn.uid("SEARCH", *criteria)
        if typ != "OK":
            raise ImapError(f"SEARCH failed: {data!r}")
        uids = {int(u) for chunk in data if chunk for u in chunk.split()}
        # "n:*" always includes the highest UID, even one below n.
        return sorted(u for u in uids if u > last_uid)

    def sizes(self, uids: list[int]) -> dict[int, int]:
        """RFC822.SIZE by UID: lets the sync keep a batch's bytes bounded."""
        if not uids:
            return {}
        typ, data = self.conn.uid("FETCH", ",".join(map(str, uids)), "(UID RFC822.SIZE)")
        if typ != "OK":
            raise ImapError(f"FETCH failed: {data!r}")
        found: dict[int, int] = {}
        for item in data:
            line = item[0] if isinstance(item, tuple) else item
            uid, size = _UID.search(line or b""), _SIZE.search(line or b"")
            if uid and size:
                found[int(uid.group(1))] = int(size.group(1))
        return found

    def fetch(self, uids: list[int]) -> dict[int, bytes]:
        """Raw messages by UID, read with BODY.PEEK[] so \\Seen is never set."""
        if not uids:
            return {}
        typ, data = self.conn.uid("FETCH", ",".join(map(str, uids)), "(UID BODY.PEEK[])")
        if typ != "OK":
            raise ImapError(f"FETCH failed: {data!r}")
        found: dict[int, bytes] = {}
        for item in data:
            if isinstance(item, tuple):
                match = _UID.search(item[0])
                if match:
                    found[int(match.group(1))] = item[1]
        return found


def _quote(name: str) -> str:
    if all(0x20 <= ord(ch) <= 0x7E for ch in name):
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return encode_folder(name)
