"""Users, passwords and login sessions."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from functools import lru_cache
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from core.db import fetch
from core.i18n import _
from core.services import audit, login_guard, roles
from core.services.common import NotFound, as_utc, utcnow, write
from core.tables import Role, Session, User
from core.validation import Form, ValidationError, choice, text

SESSION_LIFETIME = timedelta(days=14)
PENDING_LIFETIME = timedelta(minutes=10)
"""Between the password and the second factor: time to find the phone, no longer."""
MIN_PASSWORD_LENGTH = 8
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
    if len(password) < MIN_PASSWORD_LENGTH:
        form.error("password", _("At least %(n)s characters.", n=MIN_PASSWORD_LENGTH))
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


async def verify_login(
    username: str, password: str
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the account with this name or None, the account if the password opens it or None).

    The first tells the audit log whose account was tried; both outcomes of a
    failure cost one hash verification, so timing does not reveal which names exist.
    """
    row = await User.select().where(User.username == username.strip()).first()
    try:
        _hasher.verify(row["password_hash"] if row else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return row, None
    if row is None or not row["active"]:
        return row, None
    return row, row


async def by_username(username: str) -> dict[str, Any] | None:
    return (
        await User.select(User.id, User.username).where(User.username == username.strip()).first()
    )


async def authenticate(username: str, password: str) -> dict[str, Any] | None:
    return (await verify_login(username, password))[1]


async def check_password(user_id: int, password: str) -> bool:
    """Re-authentication of a logged-in user (before changing the password or second factor)."""
    row = await User.select(User.password_hash).where(User.id == user_id).first()
    if row is None:
        return False
    try:
        return _hasher.verify(row["password_hash"], password)
    except (VerificationError, InvalidHashError):
        return False


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def start_session(user_id: int, *, pending: bool = False) -> str:
    """A random token for the cookie; only its hash is stored, so a DB leak is no login.

    ``pending``: the password was right but a second factor (or its enrolment) is
    still due; such a session logs nobody in and expires within minutes.
    """
    token = secrets.token_urlsafe(32)
    now = utcnow()
    await Session.insert(
        Session(
            token_hash=_token_hash(token),
            user=user_id,
            created_at=now,
            expires_at=now + (PENDING_LIFETIME if pending else SESSION_LIFETIME),
            mfa_pending=pending,
        )
    )
    return token


ROLE_PREFIX = "role__"


@lru_cache(maxsize=1)
def _identity_sql() -> str:
    def quoted(name: str) -> str:
        return '"' + name + '"'

    hidden = {User.password_hash._meta.db_column_name, User.totp_secret._meta.db_column_name}
    user_columns = [
        f"u.{quoted(c._meta.db_column_name)}"
        for c in User._meta.columns
        if c._meta.db_column_name not in hidden
    ]
    role_columns = [
        f"r.{quoted(c._meta.db_column_name)} AS {quoted(ROLE_PREFIX + c._meta.db_column_name)}"
        for c in Role._meta.columns
    ]
    return (
        f"SELECT s.expires_at AS session__expires_at, s.mfa_pending AS session__mfa_pending, "
        f"{', '.join(user_columns + role_columns)} "
        f"FROM {Session._meta.tablename} s "
        f'JOIN {User._meta.tablename} u ON u.id = s."user" '
        f"LEFT JOIN {Role._meta.tablename} r ON r.code = u.role "
        "WHERE s.token_hash = {}"
    )


async def _session_identity(
    token: str, pending: bool
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The session's user and their role's row, in one round trip (every request asks)."""
    rows = await fetch(_identity_sql(), _token_hash(token))
    if not rows:
        return None
    row = rows[0]
    if bool(row.pop("session__mfa_pending")) != pending or not row["active"]:
        return None
    if as_utc(row.pop("session__expires_at")) < utcnow():
        return None
    role = {k.removeprefix(ROLE_PREFIX): row.pop(k) for k in list(row) if k.startswith(ROLE_PREFIX)}
    return row, role


async def session_identity(token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The logged-in user and their role's row; None for a session still waiting for
    its second factor."""
    return await _session_identity(token, pending=False)


async def pending_user(token: str) -> dict[str, Any] | None:
    """The user of a session waiting for its second factor (only the login pages ask)."""
    identity = await _session_identity(token, pending=True)
    return identity[0] if identity else None


class CodeAlreadyUsed(Exception):
    """The one-time code's time step was used at an earlier login."""


async def complete_login(
    user: dict[str, Any], *, pending_token: str = "", totp_step: int | None = None
) -> str:
    """A full session once every factor passed, logged as ``login.success``.

    The pending session is replaced (a new token, so nobody who saw the old cookie
    shares the full session). A code whose time step was already used is refused:
    a code seen over someone's shoulder does not work a second time.
    """
    async with write():
        if totp_step is not None and totp_step <= await login_guard.last_totp_step(user["id"]):
            raise CodeAlreadyUsed
        if pending_token:
            await end_session(pending_token)
        token = await start_session(user["id"])
        await login_guard.record_success(user, totp_step)
    return token


async def end_session(token: str) -> None:
    await Session.delete().where(Session.token_hash == _token_hash(token))


async def _revoke(user_id: int, keep_token: str = "") -> int:
    condition: Any = Session.user == user_id
    if keep_token:
        condition &= Session.token_hash != _token_hash(keep_token)
    async with write():
        count = await Session.count().where(condition)
        await Session.delete().where(condition)
    return int(count)


async def revoke_sessions(user_id: int) -> int:
    """Log the user out everywhere (password reset, deactivation); API tokens stay.

    Returns how many sessions ended.
    """
    return await _revoke(user_id)


async def set_password(user_id: int, password: str, *, must_change: bool) -> None:
    """Set a password someone else chose (an administrator's reset) and end all sessions.

    ``must_change``: after the next login the user must pick their own first. The
    caller writes the audit entry (``write()`` nests, so it can share the transaction).
    """
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError({"password": _("At least %(n)s characters.", n=MIN_PASSWORD_LENGTH)})
    if not await User.exists().where(User.id == user_id):
        raise NotFound(user_id)
    async with write():
        await User.update(
            {User.password_hash: hash_password(password), User.must_change_password: must_change}
        ).where(User.id == user_id)
        await _revoke(user_id)


async def change_password(
    user: dict[str, Any], current: str, new: str, confirm: str, *, session_token: str
) -> None:
    """The user replaces their own password; their other sessions end, this one stays.

    A wrong current password counts as a failed login (someone at an unlocked
    screen must not get unlimited guesses).
    """
    form = Form({})
    if not await check_password(user["id"], current):
        form.error("current", _("The current password is wrong."))
        await login_guard.record_failure(user["username"], user, "wrong current password")
    if len(new) < MIN_PASSWORD_LENGTH:
        form.error("new", _("At least %(n)s characters.", n=MIN_PASSWORD_LENGTH))
    elif new != confirm:
        form.error("confirm", _("The two new passwords differ."))
    elif new == current:
        form.error("new", _("Choose a password different from the current one."))
    form.raise_if_invalid()
    async with write():
        await User.update(
            {User.password_hash: hash_password(new), User.must_change_password: False}
        ).where(User.id == user["id"])
        ended = await _revoke(user["id"], keep_token=session_token)
        await audit.record(
            "user.password_changed",
            "user",
            user["id"],
            f"{user['username']}; {ended} other session(s) ended",
            actor=user,
        )


async def set_locale(user_id: int, locale: str, languages: list[str]) -> None:
    if locale not in languages:
        raise ValidationError({"locale": _("Choose one of the offered values.")})
    await User.update({User.locale: locale}).where(User.id == user_id)
