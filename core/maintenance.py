"""Maintenance mode: while a restore or an upgrade works on the database, nobody writes.

The state is a file in the data directory, so every web process, worker and the CLI
see it at once without a database (which may be the very thing being replaced).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.runtime import get_runtime

FLAG_NAME = "maintenance.json"


def _flag(data_dir: Path | None = None) -> Path:
    return (data_dir or get_runtime().settings.data_dir) / FLAG_NAME


def current(data_dir: Path | None = None) -> dict[str, Any] | None:
    """``{"reason": ..., "since": ..., "kind": ...}`` while maintenance is on, else None.

    Every request asks: a missing file is the answer almost always, so it is looked
    for before it is opened (a failed open raises, which costs more)."""
    flag = _flag(data_dir)
    if not os.path.exists(flag):
        return None
    try:
        return json.loads(flag.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"reason": "maintenance", "since": "", "kind": "unknown"}


def enter(kind: str, reason: str) -> None:
    flag = _flag()
    flag.parent.mkdir(parents=True, exist_ok=True)
    state = {"kind": kind, "reason": reason, "since": datetime.now(UTC).isoformat()}
    tmp = flag.with_suffix(".tmp")
    tmp.write_text(json.dumps(state), encoding="utf-8")
    os.replace(tmp, flag)


def leave() -> None:
    _flag().unlink(missing_ok=True)


@contextmanager
def during(kind: str, reason: str) -> Iterator[None]:
    """Maintenance for the length of a block; left on if the block fails, so that a
    half-done restore is never served (the reason then says what happened)."""
    enter(kind, reason)
    yield
    leave()
