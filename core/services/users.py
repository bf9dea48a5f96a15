"""Users, passwords and login sessions."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from core.i18n import _
from core.services import roles
from core.services.common import NotFound, utcnow, write
from core.tables import Session, User
from core.validation import Form, ValidationError, choice, text

SESSION_LIFETIME = timedelta(days=14)
_hasher = PasswordHasher()
# Verifying against a dummy hash keeps the timing of "no such user" and "wrong password" alike.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def generate_password() -> str:
    return secrets.token_urlsafe(12)


async def create_user(
    username: str,
    full_name: str,
    password: str,
    role: str = "manager",
    email: str = "",
    locale: str = "",
) -> dict[str, Any]:
    form = Form({"username": username, "full_name": full_name, "role": role, "password": password})
    form.field("username", text(64, required=True))
    form.field("full_name", text(200, required=True))
    form.field("role", choice(await roles.role_codes()))
    if len(password) < 8:
        form.error("password", _("At least %(n)s characters.", n=8))
    if not form.errors and await User.exists().where(User.username == form.cleaned["username"]):
        form.error("username", _("This user name is taken."))
    form.raise_if_invalid()
    async with write():
        rows = await User.insert(
            User(
                username=form.cleaned["username"],
                full_name=form.cleaned["full_name"],
                email=email,
                password_hash=hash_password(password),
                role=form.cleaned["role"],
                locale=locale,
                active=True,
                created_at=utcnow(),
            )
        ).returning(User.id)
    return await get_user(rows[0]["id"])


async def get_user(user_id: int) -> dict[str, Any]:
    row = await User.select().where(User.id == user_id).first()
    if row is None:
        raise NotFound(user_id)
    return row


async def list_users(active_only: bool = True) -> list[dict[str, Any]]:
    query = User.select(User.id, User.username, User.full_name, User.role, User.active)
    if active_only:
        query = query.where(User.active.eq(True))
    return await query.order_by(User.full_name)


async def authenticate(username: str, password: str) -> dict[str, Any] | None:
    row = await User.select().where(User.username == username.strip()).first()
    try:
        _hasher.verify(row["password_hash"] if row else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None or not row["active"]:
        return None
    return row


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def start_session(user_id: int) -> str:
    """A random token for the cookie; only its hash is stored, so a DB leak is no login."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    await Session.insert(
        Session(
            token_hash=_token_hash(token),
            user=user_id,
            created_at=now,
            expires_at=now + SESSION_LIFETIME,
        )
    )
    return token


async def user_for_session(token: str) -> dict[str, Any] | None:
    rows = (
        await Session.select(
            Session.expires_at,
            *Session.user.all_columns(exclude=[Session.user.password_hash]),
        )
        .where(Session.token_hash == _token_hash(token))
        .first()
    )
    if rows is None:
        return None
    from core.services.common import as_utc

    if as_utc(rows["expires_at"]) < utcnow() or not rows["user.active"]:
        return None
    return {
        key.removeprefix("user."): value for key, value in rows.items() if key.startswith("user.")
    }


async def end_session(token: str) -> None:
    await Session.delete().where(Session.token_hash == _token_hash(token))


async def set_locale(user_id: int, locale: str, languages: list[str]) -> None:
    if locale not in languages:
        raise ValidationError({"locale": _("Choose one of the offered values.")})
    await User.update({User.locale: locale}).where(User.id == user_id)
