"""Where a call's recording lives: a mounted folder of the PBX's spool, or an HTTP URL.

FreePBX names recordings ``<reason>-<number>-<from>-<YYYYMMDD>-<HHMMSS>-<uniqueid>.<ext>``
under ``YYYY/MM/DD/`` and the uniqueid is that of the recording channel, so a call
without a recorded name is looked up by the uniqueids of all its channels.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from core.services.common import as_utc
from core.services.tasks import install_zone
from plugins.telephony.config import TelephonyConfig

AUDIO_SUFFIXES = {".wav", ".mp3", ".ogg", ".gsm", ".wav49", ".WAV"}


def _inside(root: Path, candidate: Path) -> Path | None:
    """The file if it is a regular file under root (no ``..`` or symlink escape)."""
    try:
        resolved = candidate.resolve(strict=True)
        resolved.relative_to(root.resolve(strict=True))
    except (OSError, ValueError):
        return None
    return resolved if resolved.is_file() else None


def _day_folders(root: Path, started_at: datetime) -> list[Path]:
    days = {as_utc(started_at).date(), as_utc(started_at).astimezone(install_zone()).date()}
    folders = [root / f"{d:%Y}" / f"{d:%m}" / f"{d:%d}" for d in sorted(days)]
    return [*folders, root]


def find_in_folder(root: Path, call: dict[str, Any]) -> Path | None:
    recording = call.get("recording") or ""
    if recording:
        candidate = Path(recording)
        return _inside(root, candidate if candidate.is_absolute() else root / candidate)
    channel_ids = call.get("channel_ids") or []
    if isinstance(channel_ids, str):
        channel_ids = json.loads(channel_ids or "[]")
    for folder in _day_folders(root, call["started_at"]):
        for uniqueid in channel_ids:
            if not uniqueid or "/" in uniqueid:
                continue
            for match in sorted(folder.glob(f"*-{uniqueid}.*")):
                if match.suffix in AUDIO_SUFFIXES and (found := _inside(root, match)):
                    return found
    return None


def recording_source(config: TelephonyConfig, call: dict[str, Any]) -> Path | str | None:
    """A local file to stream or a URL to send the browser to; None when there is none."""
    recording = call.get("recording") or ""
    if recording.startswith(("http://", "https://")):
        return recording  # a cloud PBX handed us the URL itself
    if config.recordings_folder:
        found = find_in_folder(Path(config.recordings_folder), call)
        if found is not None:
            return found
    if config.recordings_url and recording:
        linkedid = call["call_key"].split(":", 1)[1]
        return config.recordings_url.format(file=recording.lstrip("/"), linkedid=linkedid)
    return None
