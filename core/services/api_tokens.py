"""Bearer tokens for the JSON API: shown once at creation, stored only as a hash."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from core.services.common import NotFound, as_utc, utcnow, write
from core.tables import ApiToken, User
from core.validation import Form, text


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_token(user_id: int, name: str) -> str:
    """A new token for the user; the plaintext is returned here and never again."""
    form = Form({"name": name})
    form.field("name", text(100, required=True))
    form.raise_if_invalid()
    if not await User.exists().where(User.id == user_id):
        raise NotFound(user_id)
    token = secrets.token_urlsafe(32)
    async with write():
        await ApiToken.insert(
            ApiToken(
                user=user_id,
                name=form.cleaned["name"],
                token_hash=hash_token(token),
                created_at=utcnow(),
            )
        )
    return token


async def list_tokens(user_id: int) -> list[dict[str, Any]]:
    rows = (
        await ApiToken.select(
            ApiToken.id, ApiToken.name, ApiToken.created_at, ApiToken.last_used_at
        )
        .where(ApiToken.user == user_id)
        .order_by(ApiToken.created_at, ascending=False)
    )
    for row in rows:
        row["created_at"] = as_utc(row["created_at"])
        row["last_used_at"] = as_utc(row["last_used_at"])
    return rows


async def revoke(user_id: int, token_id: int) -> None:
    """Delete one of the user's tokens; NotFound if it is not theirs."""
    if not await ApiToken.exists().where((ApiToken.id == token_id) & (ApiToken.user == user_id)):
        raise NotFound(token_id)
    async with write():
        await ApiToken.delete().where((ApiToken.id == token_id) & (ApiToken.user == user_id))
