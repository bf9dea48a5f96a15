"""Attachment files of synced mail, under ``<data dir>/mail/attachments``.

Content-addressed (the SHA-256 is the file name): the same attachment in many
messages is stored once, and writing it again after a crashed batch is harmless.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from core.runtime import get_runtime


def mail_dir() -> Path:
    return get_runtime().settings.data_dir / "mail"


def attachments_dir() -> Path:
    return mail_dir() / "attachments"


def save(payload: bytes) -> dict[str, Any]:
    """Write the bytes once (atomically); the row fields that point at them."""
    sha = hashlib.sha256(payload).hexdigest()
    key = f"{sha[:2]}/{sha}"
    target = attachments_dir() / key
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
        with os.fdopen(fd, "wb") as out:
            out.write(payload)
        os.replace(tmp, target)
    return {"storage_key": key, "sha256": sha, "size": len(payload)}


def path_of(storage_key: str) -> Path:
    """The file of a stored attachment; ValueError for a key escaping the folder."""
    base = attachments_dir().resolve()
    path = (base / storage_key).resolve()
    if base not in path.parents:
        raise ValueError(storage_key)
    return path
