"""Call events from a cloud PBX, in the JSON shape of docs/telephony.md.

They feed the same `CallStore` as the AMI tracker, keyed ``hook:<call_id>``, so a
repeated or late event changes nothing twice. A ``call.ended`` (or ``answered``) for
a call never started carries enough to open it first: some PBXs only send a CDR.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from plugins.telephony.calls import CallStore
from plugins.telephony.config import load_config

MAX_BODY = 64 * 1024
EVENTS = ("call.started", "call.answered", "call.ended", "recording.ready")
DIRECTIONS = ("inbound", "outbound", "internal")
END_RESULTS = ("answered", "missed", "busy", "failed", "no_answer")


class WebhookError(ValueError):
    """The payload cannot be applied; the message tells the PBX integrator why."""


def _text(payload: dict[str, Any], key: str, limit: int, required: bool = False) -> str:
    value = payload.get(key)
    if value is None or value == "":
        if required:
            raise WebhookError(f"{key} is required")
        return ""
    if not isinstance(value, str | int):
        raise WebhookError(f"{key} must be a string")
    value = str(value).strip()
    if len(value) > limit:
        raise WebhookError(f"{key} is longer than {limit} characters")
    return value


def _time(payload: dict[str, Any]) -> datetime:
    raw = payload.get("at")
    if raw in (None, ""):
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        raise WebhookError("at must be an ISO 8601 time, e.g. 2026-11-23T10:15:00Z") from None
    if parsed.tzinfo is None:
        raise WebhookError("at needs a time zone (Z or +03:00)")
    return parsed.astimezone(UTC)


async def apply(payload: Any) -> str:
    """Apply one event; returns what happened (``started``, ``duplicate``, ...)."""
    if not isinstance(payload, dict):
        raise WebhookError("the body must be a JSON object")
    event = _text(payload, "event", 32, required=True)
    if event not in EVENTS:
        raise WebhookError(f"event must be one of {', '.join(EVENTS)}")
    key = "hook:" + _text(payload, "call_id", 100, required=True)
    at = _time(payload)
    store = CallStore()
    if event == "recording.ready":
        recording = _text(payload, "recording_url", 500) or _text(payload, "recording", 500)
        if not recording:
            raise WebhookError("recording_url (or recording) is required")
        if "://" in recording and not recording.startswith(("http://", "https://")):
            raise WebhookError("recording_url must be an http(s) address")
        await store.recording(key, recording)
        return "recording"
    direction = _text(payload, "direction", 16)
    started = False
    if direction:
        if direction not in DIRECTIONS:
            raise WebhookError(f"direction must be one of {', '.join(DIRECTIONS)}")
        number = _text(payload, "external_number", 64, required=direction != "internal")
        config = await load_config()
        extension = _text(payload, "extension", 32)
        ringing = payload.get("ringing_extensions") or ([extension] if extension else [])
        if not isinstance(ringing, list) or not all(isinstance(e, str) for e in ringing):
            raise WebhookError("ringing_extensions must be a list of strings")
        started = await store.start(
            key,
            direction=direction,
            number=number,
            did=_text(payload, "did", 64),
            extension=extension,
            user_id=config.extensions.get(extension) if direction == "outbound" else None,
            ringing_users=config.users_of(ringing[:50]),
            at=at,
        )
    elif event == "call.started":
        raise WebhookError("direction is required on call.started")
    if event == "call.started":
        return "started" if started else "duplicate"
    if event == "call.answered":
        extension = _text(payload, "extension", 32)
        config = await load_config()
        await store.answered(
            key, user_id=config.extensions.get(extension), extension=extension, at=at
        )
        return "answered"
    result = _text(payload, "result", 16) or "missed"
    if result not in END_RESULTS:
        raise WebhookError(f"result must be one of {', '.join(END_RESULTS)}")
    if result == "answered" and payload.get("answered_at"):
        answered_at = _time({"at": payload["answered_at"]})
        extension = _text(payload, "extension", 32)
        config = await load_config()
        await store.answered(
            key, user_id=config.extensions.get(extension), extension=extension, at=answered_at
        )
    if await store.end(key, result=result, at=at):
        return "ended"
    if not await store.exists(key):
        raise WebhookError("unknown call_id: send direction and external_number to open it")
    return "duplicate"
