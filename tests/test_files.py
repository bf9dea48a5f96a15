"""Attachments: streamed upload, download, size limit, soft delete, nothing half-stored."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import field_error, post


@pytest.fixture
def small_limit(runtime: Any) -> Iterator[int]:
    """Uploads limited to 1 MB for the test."""
    original = runtime.settings
    runtime.settings = dataclasses.replace(original, max_upload_mb=1)
    try:
        yield runtime.settings.max_upload_bytes
    finally:
        runtime.settings = original


def stored_files() -> set[Path]:
    from core.runtime import get_runtime

    root = get_runtime().settings.attachments_dir
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


async def make_client(user: dict[str, Any], name: str = "ООО «Ромашка»") -> int:
    from core.services import clients

    return await clients.create_client({"name": name, "responsible": user["id"]}, user["id"])


async def upload(http: Any, client_id: int, filename: str, content: bytes, **extra: Any) -> Any:
    return await post(
        http,
        f"/clients/{client_id}/files",
        extra.pop("data", None),
        files={"file": (filename, content, extra.pop("content_type", "application/pdf"))},
        headers={"hx-request": "true"},
    )


async def test_upload_shows_on_card_timeline_and_downloads(as_manager, manager):
    from core.services import attachments, timeline

    client_id = await make_client(manager)
    content = os.urandom(300 * 1024)  # several chunks, past the multipart spool size
    r = await upload(as_manager, client_id, "Договор №5 (подписан).pdf", content)
    assert r.status_code == 200, r.text
    assert "Договор №5 (подписан).pdf" in r.text
    assert 'id="client-files"' in r.text

    rows = await attachments.for_client(client_id)
    assert len(rows) == 1
    row = rows[0]
    assert row["size"] == len(content)
    assert row["sha256"] == hashlib.sha256(content).hexdigest()
    assert row["uploader_name"] == "Max Manager"
    assert row["content_type"] == "application/pdf"
    assert attachments.path_of(row).read_bytes() == content

    card = await as_manager.get(f"/clients/{client_id}")
    assert "Договор №5 (подписан).pdf" in card.text
    assert f'href="/files/{row["id"]}"' in card.text
    entries, _ = await timeline.page(client_id)
    attached = [e for e in entries if e["kind"] == "file.attached"]
    assert attached and attached[0]["payload"]["filename"] == "Договор №5 (подписан).pdf"
    assert attached[0]["payload"]["size"] == len(content)

    download = await as_manager.get(f"/files/{row['id']}")
    assert download.status_code == 200
    assert download.content == content
    assert download.headers["content-type"].startswith("application/pdf")
    disposition = download.headers["content-disposition"]
    assert disposition.startswith("attachment;")
    assert "filename*=utf-8''" in disposition


async def test_plain_form_upload_redirects_to_card(as_manager, manager):
    client_id = await make_client(manager)
    r = await post(
        as_manager,
        f"/clients/{client_id}/files",
        files={"file": ("notes.txt", b"hello", "text/plain")},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert r.headers["location"] == f"/clients/{client_id}"


async def test_oversized_upload_refused_and_nothing_left(as_manager, manager, small_limit):
    from core.services import attachments

    client_id = await make_client(manager)
    before = stored_files()
    r = await upload(as_manager, client_id, "big.bin", b"x" * (small_limit + 1))
    assert r.status_code == 422
    message = field_error(r.text, "file")
    assert message and "1 MB" in message
    assert await attachments.for_client(client_id) == []
    assert stored_files() == before

    # exactly at the limit is fine
    ok = await upload(as_manager, client_id, "fits.bin", b"x" * small_limit)
    assert ok.status_code == 200, ok.text


async def test_store_refuses_past_explicit_limit(manager):
    from core.services import attachments
    from core.validation import ValidationError

    client_id = await make_client(manager)
    before = stored_files()

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"y" * 1000

    with pytest.raises(ValidationError) as exc:
        await attachments.store(
            client_id, None, "a.txt", "text/plain", chunks(), manager["id"], max_bytes=2500
        )
    assert "file" in exc.value.errors
    assert stored_files() == before


async def test_empty_and_missing_file_refused(as_manager, manager):
    client_id = await make_client(manager)
    before = stored_files()
    r = await upload(as_manager, client_id, "empty.txt", b"")
    assert r.status_code == 422
    assert "empty" in (field_error(r.text, "file") or "")
    assert stored_files() == before

    r = await post(
        as_manager, f"/clients/{client_id}/files", {"x": "1"}, headers={"hx-request": "true"}
    )
    assert r.status_code == 422
    assert field_error(r.text, "file")


async def test_deleted_file_is_gone(as_manager, manager):
    from core.services import attachments, timeline

    client_id = await make_client(manager)
    await upload(as_manager, client_id, "a.txt", b"abc", content_type="text/plain")
    (row,) = await attachments.for_client(client_id)
    r = await post(as_manager, f"/files/{row['id']}/delete", headers={"hx-request": "true"})
    assert r.status_code == 200
    assert "a.txt" not in r.text
    assert await attachments.for_client(client_id) == []
    assert (await as_manager.get(f"/files/{row['id']}")).status_code == 404
    assert (await as_manager.get("/files/999999")).status_code == 404
    entries, _ = await timeline.page(client_id)
    assert entries[0]["kind"] == "file.removed"
    assert entries[0]["payload"]["filename"] == "a.txt"


async def test_database_failure_leaves_no_file(manager, monkeypatch):
    from core.services import attachments
    from core.tables import Attachment

    client_id = await make_client(manager)
    before = stored_files()

    async def boom(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("database went away")

    monkeypatch.setattr(attachments.timeline, "add_entry", boom)
    with pytest.raises(RuntimeError):
        await attachments.store(
            client_id, None, "a.txt", "text/plain", _Bytes(b"data"), manager["id"]
        )
    assert stored_files() == before
    assert await Attachment.count() == 0  # the row insert was rolled back


async def test_store_checks_client_and_deal(manager):
    from core.services import attachments, deals
    from core.services.common import NotFound
    from core.validation import ValidationError

    with pytest.raises(NotFound):
        await attachments.store(999999, None, "a", None, _Bytes(b"x"), manager["id"])
    mine = await make_client(manager, "Mine")
    other = await make_client(manager, "Other")
    await deals.ensure_default_pipeline()
    deal_id = await deals.create_deal({"title": "Big", "client": other}, manager["id"])
    with pytest.raises(ValidationError) as exc:
        await attachments.store(mine, deal_id, "a", None, _Bytes(b"x"), manager["id"])
    assert "deal" in exc.value.errors
    attachment_id = await attachments.store(
        other, deal_id, "a.png", None, _Bytes(b"x"), manager["id"]
    )
    row = await attachments.get(attachment_id)
    assert row["deal"] == deal_id
    assert row["content_type"] == "image/png"  # guessed from the name


def test_sanitize_filename():
    from core.services.attachments import sanitize_filename

    assert sanitize_filename("../../etc/passwd") == "passwd"
    assert sanitize_filename("C:\\Users\\me\\отчёт.xlsx") == "отчёт.xlsx"
    assert sanitize_filename("a\x00b\nc\u202e.txt") == "abc.txt"
    assert sanitize_filename("") == "file"
    assert sanitize_filename("..") == "file"
    long = sanitize_filename("я" * 300 + ".docx")
    assert len(long) == 255 and long.endswith(".docx")


class _Bytes:
    """A minimal synchronous file-like object."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, size: int = -1) -> bytes:
        chunk, self.data = self.data[:size], self.data[size:]
        return chunk


async def test_filename_is_escaped_in_the_panel(as_manager, manager):
    client_id = await make_client(manager)
    r = await upload(as_manager, client_id, "<img src=x onerror=alert(1)>.txt", b"x")
    assert r.status_code == 200
    assert "<img src=x" not in r.text
    assert "&lt;img src=x onerror=alert(1)&gt;.txt" in r.text
