"""Credentials a plugin must store to reach another system (a PBX, a mailbox).

They are sealed with a key derived from the install's secret key, so a copy of the
database or a backup alone does not give away the customer's passwords.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken

from core.settings import get_settings


class SealError(ValueError):
    """A sealed value cannot be opened: the install's secret key has changed."""


def purpose_key(label: str, *, secret_key: str | None = None) -> bytes:
    """32 bytes derived from the install's secret key for one purpose: the label keeps
    each use (sealing, signed links...) apart from every other."""
    secret = secret_key or get_settings().secret_key
    return hashlib.sha256(f"{label}:".encode() + secret.encode()).digest()


def _fernet(secret_key: str | None = None) -> Fernet:
    material = purpose_key("kartoteka.sealed.v1", secret_key=secret_key)
    return Fernet(base64.urlsafe_b64encode(material))


def seal(plain: str, *, secret_key: str | None = None) -> str:
    return _fernet(secret_key).encrypt(plain.encode("utf-8")).decode("ascii")


def unseal(token: str, *, secret_key: str | None = None) -> str:
    try:
        return _fernet(secret_key).decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError):
        raise SealError(
            "a stored credential cannot be decrypted: the install's secret key "
            "(KARTOTEKA_SECRET_KEY or <data dir>/secret_key) differs from the one it was "
            "saved with; enter the password again"
        ) from None
