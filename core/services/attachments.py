"""Files attached to a client (optionally to one of its deals).

An upload is streamed to a temporary file chunk by chunk (never held in memory),
hashed and measured on the way, refused as soon as it grows past the size limit,
then renamed into ``<attachments_dir>/<aa>/<bb>/<uuid hex>`` and recorded in the
database in one transaction. If the database write fails the file is removed, so
nothing is ever half-stored. Deleting is a soft delete: the bytes stay on disk.
"""

from __future__ import annotations

import hashlib
import inspect
import mimetypes
import os
import re
import tempfile
import unicodedata
import uuid
from collections.abc import AsyncIterable, Awaitable
from pathlib import Path
from typing import Any, Protocol

from core.db import fetch
from core.i18n import _
from core.runtime import get_runtime
from core.services import audit, clients, timeline
from core.services.common import NotFound, as_utc, utcnow, write
from core.tables import Attachment, Deal
from core.validation import ValidationError

CHUNK_SIZE = 64 * 1024
MAX_FILENAME = 255
_CONTENT_TYPE = re.compile(r"^[\w.+-]+/[\w.+-]+$")


class Readable(Protocol):
    def read(self, size: int = -1) -> bytes | Awaitable[bytes]: ...


def attachments_dir() -> Path:
    return get_runtime().settings.attachments_dir


def sanitize_filename(name: str) -> str:
    """Base name only, no control characters, at most 255 characters; Unicode kept."""
    name = unicodedata.normalize("NFC", str(name or ""))
    name = re.split(r"[\\/]", name)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = name.strip().strip(".").strip()
    if len(name) > MAX_FILENAME:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            name = stem[: MAX_FILENAME - len(ext) - 1] + "." + ext
        else:
            name = name[:MAX_FILENAME]
    return name or "file"


def _content_type(value: str | None, filename: str) -> str:
    value = (value or "").split(";", 1)[0].strip().lower()
    if not value or not _CONTENT_TYPE.match(value) or len(value) > 128:
        value = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return value


def _format_mb(limit: int) -> str:
    mb = limit / (1024 * 1024)
    return str(int(mb)) if mb == int(mb) else f"{mb:.2f}".rstrip("0").rstrip(".")


async def _chunks(stream: Readable | AsyncIterable[bytes]) -> Any:
    """Yield chunks from an async/sync file-like object or an async iterable of bytes."""
    if hasattr(stream, "read"):
        while True:
            chunk = stream.read(CHUNK_SIZE)
            if inspect.isawaitable(chunk):
                chunk = await chunk
            if not chunk:
                return
            yield chunk
    else:
        async for chunk in stream:  # type: ignore[union-attr]
            if chunk:
                yield chunk


async def _check_deal(client_id: int, deal_id: int | None) -> None:
    if deal_id is None:
        return
    row = (
        await Deal.select(Deal.client)
        .where((Deal.id == deal_id) & Deal.deleted_at.is_null())
        .first()
    )
    if row is None or row["client"] != client_id:
        raise ValidationError({"deal": _("Choose a deal of this client.")})


async def _spool(stream: Readable | AsyncIterable[bytes], limit: int) -> tuple[Path, int, str]:
    """Copy the stream to a temporary file; (path, size, sha256). Refuses past `limit`."""
    tmp_dir = attachments_dir() / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix="upload-")
    tmp_path = Path(tmp_name)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in _chunks(stream):
                size += len(chunk)
                if size > limit:
                    raise ValidationError(
                        {
                            "file": _(
                                "The file is too large: at most %(mb)s MB.", mb=_format_mb(limit)
                            )
                        }
                    )
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if size == 0:
            raise ValidationError({"file": _("The file is empty.")})
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return tmp_path, size, digest.hexdigest()


async def store(
    client_id: int,
    deal_id: int | None,
    filename: str,
    content_type: str | None,
    stream: Readable | AsyncIterable[bytes],
    actor_id: int | None,
    max_bytes: int | None = None,
) -> int:
    """Save an upload for a client (and optionally one of its deals); the new id."""
    await clients.get_client(client_id)
    await _check_deal(client_id, deal_id)
    limit = max_bytes if max_bytes is not None else get_runtime().settings.max_upload_bytes
    name = sanitize_filename(filename)
    media_type = _content_type(content_type, name)

    tmp_path, size, sha256 = await _spool(stream, limit)
    key = uuid.uuid4().hex
    storage_key = f"{key[:2]}/{key[2:4]}/{key}"
    final_path = attachments_dir() / storage_key
    try:
        final_path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_path, final_path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    try:
        async with write():
            rows = await Attachment.insert(
                Attachment(
                    client=client_id,
                    deal=deal_id,
                    filename=name,
                    content_type=media_type,
                    size=size,
                    storage_key=storage_key,
                    sha256=sha256,
                    uploaded_by=actor_id,
                    created_at=utcnow(),
                )
            ).returning(Attachment.id)
            attachment_id = int(rows[0]["id"])
            await timeline.add_entry(
                client_id,
                "file.attached",
                {"filename": name, "size": size, "attachment_id": attachment_id},
                actor_id,
                deal_id=deal_id,
            )
            await audit.record(
                "file.create", "client", client_id, name, {"attachment": [None, attachment_id]}
            )
    except BaseException:
        final_path.unlink(missing_ok=True)
        raise
    return attachment_id


def _columns() -> list[Any]:
    return [
        *Attachment.all_columns(),
        Attachment.uploaded_by.full_name.as_alias("uploader_name"),
    ]


def _fix(row: dict[str, Any]) -> dict[str, Any]:
    row["created_at"] = as_utc(row["created_at"])
    return row


async def for_client(client_id: int, deal_id: int | None = None) -> list[dict[str, Any]]:
    """The client's files (or one deal's), newest first, with the uploader's name."""
    await clients.ensure_visible(client_id)
    # Raw SQL: every card view runs it (Piccolo's query building cost more than the query).
    rows = await fetch(
        "SELECT f.*, u.full_name AS uploader_name FROM core_attachment f "
        "LEFT JOIN core_user u ON u.id = f.uploaded_by "
        "WHERE f.client = {} AND f.deleted_at IS NULL"
        + (" AND f.deal = {}" if deal_id is not None else "")
        + " ORDER BY f.created_at DESC, f.id DESC",
        client_id,
        *([deal_id] if deal_id is not None else []),
    )
    return [_fix(row) for row in rows]


async def get(attachment_id: int) -> dict[str, Any]:
    row = (
        await Attachment.select(*_columns())
        .where((Attachment.id == attachment_id) & Attachment.deleted_at.is_null())
        .first()
    )
    if row is None:
        raise NotFound(attachment_id)
    await clients.ensure_visible(row["client"])  # a file is as visible as its client
    return _fix(row)


async def delete(attachment_id: int, actor_id: int | None) -> int:
    """Soft delete; returns the client id (the panel to re-render)."""
    row = await get(attachment_id)
    async with write():
        await Attachment.update({Attachment.deleted_at: utcnow()}).where(
            Attachment.id == attachment_id
        )
        await timeline.add_entry(
            row["client"],
            "file.removed",
            {"filename": row["filename"], "attachment_id": attachment_id},
            actor_id,
            deal_id=row["deal"],
        )
        await audit.record(
            "file.delete",
            "client",
            row["client"],
            row["filename"],
            {"attachment": [attachment_id, None]},
        )
    return int(row["client"])


def path_of(row: dict[str, Any]) -> Path:
    """Where the bytes of an attachment row live."""
    base = attachments_dir().resolve()
    path = (base / row["storage_key"]).resolve()
    if base not in path.parents:
        raise NotFound(row.get("id"))
    return path
