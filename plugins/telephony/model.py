"""Plain values shared by the call tracker, the services and the live screen pop.

Kept free of database and web imports so every part of the plugin (and the other
process that renders the screen pop) can import it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Direction = Literal["inbound", "outbound", "internal"]
CallState = Literal["ringing", "answered", "ended"]


@dataclass(frozen=True)
class CallView:
    """What a screen pop needs; the tracker sends one on every state change."""

    linkedid: str
    direction: Direction
    external_number: str
    """E.164 when it parses, else as the PBX sent it."""
    state: CallState
    ringing_user_ids: tuple[int, ...]
    """Users whose extensions ring (from the extension mapping)."""
    answered_by_user_id: int | None
    client_id: int | None
    """Matched through the core's ``lookup_client`` hook."""
    started_at: datetime


@dataclass(frozen=True)
class OriginateResult:
    """Outcome of a click-to-call request, shown to the user as is."""

    ok: bool
    message: str
