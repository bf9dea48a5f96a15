"""The optional second factor: time-based one-time codes (RFC 6238, any authenticator app).

A secret is stored on the user only after a code made from it was typed back, so
nobody locks themselves out with a half-scanned QR code. A role may require it
(``Role.totp_required``); such users enrol right after their password on the next
login.
"""

from __future__ import annotations

import hmac
import re
from datetime import datetime
from typing import Any

import pyotp
import segno

from core.services import audit
from core.services.common import utcnow, write
from core.tables import Role, User

ISSUER = "Kartoteka"
VALID_WINDOW = 1
"""Codes of the previous and next 30-second step pass too: phone clocks drift."""
_SECRET = re.compile(r"[A-Z2-7]{32}")


def new_secret() -> str:
    return pyotp.random_base32()


def valid_secret(secret: str) -> bool:
    """Enrolment forms carry the proposed secret back; accept only what `new_secret` makes."""
    return bool(_SECRET.fullmatch(secret))


def provisioning_uri(secret: str, username: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=ISSUER)


def qr_svg(uri: str) -> str:
    """The otpauth:// URI as an inline SVG QR code (no image request, nothing inline to run)."""
    return segno.make(uri, error="m").svg_inline(scale=4, border=2, light="#fff")


def matching_step(secret: str, code: str, at: datetime | None = None) -> int | None:
    """The time step whose code this is (within the valid window), or None.

    Returning the step rather than a yes/no lets the caller refuse a code that was
    already used.
    """
    code = re.sub(r"\s", "", code)
    if not secret or not re.fullmatch(r"\d{6}", code):
        return None
    totp = pyotp.TOTP(secret)
    step = totp.timecode(at or utcnow())
    for candidate in range(step - VALID_WINDOW, step + VALID_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(candidate), code):
            return candidate
    return None


async def secret_of(user_id: int) -> str:
    row = await User.select(User.totp_secret).where(User.id == user_id).first()
    return str(row["totp_secret"] or "") if row else ""


async def required_for(role_code: str) -> bool:
    row = await Role.select(Role.totp_required).where(Role.code == role_code).first()
    return bool(row and row["totp_required"])


async def enable(user: dict[str, Any], secret: str) -> None:
    async with write():
        await User.update({User.totp_secret: secret}).where(User.id == user["id"])
        await audit.record("user.totp_enabled", "user", user["id"], user["username"], actor=user)


async def disable(user: dict[str, Any]) -> None:
    async with write():
        await User.update({User.totp_secret: ""}).where(User.id == user["id"])
        await audit.record("user.totp_disabled", "user", user["id"], user["username"], actor=user)
