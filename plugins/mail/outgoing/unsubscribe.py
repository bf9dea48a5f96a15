"""Unsubscribe links: a signed token per recipient that works without logging in.

The token carries the address and the mailing and an HMAC made with a key derived
from the install's secret, so nobody can unsubscribe an address they did not receive
a mailing at, and no database lookup is needed to check it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from core.sealed import purpose_key
from core.services.common import utcnow, write
from plugins.mail.outgoing.tables import Mailing, MailUnsubscribe

PATH = "/p/mail/unsubscribe/"


@dataclass(frozen=True)
class Subscription:
    email: str
    mailing_id: int


def _sign(payload: bytes) -> str:
    key = purpose_key("kartoteka.mail.unsubscribe.v1")
    return hmac.new(key, payload, hashlib.sha256).hexdigest()[:32]


def make_token(email: str, mailing_id: int) -> str:
    payload = f"{mailing_id}:{email.lower()}".encode()
    encoded = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    return f"{encoded}.{_sign(payload)}"


def read_token(token: str) -> Subscription | None:
    """The subscription a token stands for, or None when it is forged or mangled."""
    encoded, _, signature = token.partition(".")
    try:
        payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        mailing, _, email = payload.decode().partition(":")
        subscription = Subscription(email=email, mailing_id=int(mailing))
    except (ValueError, UnicodeDecodeError):
        return None
    if not email or not hmac.compare_digest(_sign(payload), signature):
        return None
    return subscription


def link(base_url: str, email: str, mailing_id: int) -> str:
    return base_url.rstrip("/") + PATH + make_token(email, mailing_id)


async def unsubscribe(subscription: Subscription, client_id: int | None = None) -> None:
    """Record the address (once; a second click changes nothing)."""
    mailing = await Mailing.select(Mailing.id).where(Mailing.id == subscription.mailing_id).first()
    async with write():
        await MailUnsubscribe.insert(
            MailUnsubscribe(
                email=subscription.email,
                client=client_id,
                mailing=mailing["id"] if mailing else None,
                created_at=utcnow(),
            )
        ).on_conflict(action="DO NOTHING")


async def unsubscribed(emails: list[str]) -> set[str]:
    if not emails:
        return set()
    rows = await MailUnsubscribe.select(MailUnsubscribe.email).where(
        MailUnsubscribe.email.is_in(emails)
    )
    return {row["email"] for row in rows}
