"""The telephony settings as plain values, read from the one settings row."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from core.runtime import get_runtime
from core.sealed import SealError, unseal
from core.services.common import utcnow
from core.validation import try_normalize_phone
from plugins.telephony.ami.client import AmiCredentials
from plugins.telephony.tables import TelephonyExtension, TelephonySettings

SETTINGS_ID = 1
_CHANNEL_RESOURCE = re.compile(r"^(?:[A-Za-z0-9_]+)/([^-@;/]+)")


@dataclass(frozen=True)
class TelephonyConfig:
    ami_host: str = ""
    ami_port: int = 5038
    ami_username: str = ""
    ami_secret: str = ""
    originate_channel: str = "PJSIP/{extension}"
    originate_context: str = "from-internal"
    hint_context: str = "ext-local"
    external_contexts: tuple[str, ...] = ("from-pstn", "from-trunk", "from-did-direct", "ext-did")
    trunk_channels: tuple[str, ...] = ()
    record_internal: bool = False
    missed_owner: int | None = None
    recordings_folder: str = ""
    recordings_url: str = ""
    webhook_token: str = ""
    extensions: dict[str, int] = field(default_factory=dict)
    """Extension -> user id."""
    version: str = ""
    """Changes whenever the settings are saved (the owner reconnects on change)."""

    @property
    def ami_configured(self) -> bool:
        return bool(self.ami_host and self.ami_username)

    def credentials(self) -> AmiCredentials:
        return AmiCredentials(self.ami_host, self.ami_port, self.ami_username, self.ami_secret)

    def users_of(self, extensions: list[str]) -> tuple[int, ...]:
        found: list[int] = []
        for extension in extensions:
            user_id = self.extensions.get(extension)
            if user_id is not None and user_id not in found:
                found.append(user_id)
        return tuple(found)

    def extension_of(self, user_id: int) -> str | None:
        for extension, owner in sorted(self.extensions.items()):
            if owner == user_id:
                return extension
        return None

    def is_trunk(self, channel: str, context: str = "") -> bool:
        """Does this channel lead to the outside world (a trunk or an inbound context)?

        Besides the configured contexts and channel prefixes, a channel whose name is
        not a short number (``PJSIP/provider-0001``) is a trunk: phones are numbered.
        """
        if context and context in self.external_contexts:
            return True
        if any(prefix and channel.startswith(prefix) for prefix in self.trunk_channels):
            return True
        if not channel or channel.startswith("Local/"):
            return False
        resource = channel_extension(channel)
        if not resource or resource in self.extensions:
            return False
        return not (resource.isdigit() and len(resource) <= 6)


def lines(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in re.split(r"[\n,]", text or "") if part.strip())


def channel_extension(channel: str) -> str:
    """``PJSIP/7002-001600ea`` -> ``7002``; ``Local/101@from-internal-0001;1`` -> ``101``."""
    match = _CHANNEL_RESOURCE.match(channel or "")
    return match.group(1) if match else ""


def external_number(raw: str) -> str:
    """E.164 when the number parses in the install's region, else as the PBX sent it."""
    raw = (raw or "").strip()
    if not raw or raw.startswith("<"):
        return raw
    return try_normalize_phone(raw, get_runtime().settings.default_region) or raw


async def settings_row() -> dict[str, Any]:
    """The settings row, created with defaults on first use."""
    row = await TelephonySettings.select().where(TelephonySettings.id == SETTINGS_ID).first()
    if row is None:
        await TelephonySettings.insert(
            TelephonySettings(id=SETTINGS_ID, updated_at=utcnow())
        ).on_conflict(action="DO NOTHING")
        row = await TelephonySettings.select().where(TelephonySettings.id == SETTINGS_ID).first()
    assert row is not None
    return row


def _unsealed(value: str) -> str:
    if not value:
        return ""
    try:
        return unseal(value)
    except SealError:
        return ""  # the status shows "login refused"; the admin enters it again


async def load_config() -> TelephonyConfig:
    row = await settings_row()
    extensions = {
        r["extension"]: int(r["user"])
        for r in await TelephonyExtension.select(
            TelephonyExtension.extension, TelephonyExtension.user
        )
    }
    return TelephonyConfig(
        ami_host=row["ami_host"],
        ami_port=int(row["ami_port"] or 5038),
        ami_username=row["ami_username"],
        ami_secret=_unsealed(row["ami_secret"]),
        originate_channel=row["originate_channel"] or "PJSIP/{extension}",
        originate_context=row["originate_context"] or "from-internal",
        hint_context=row["hint_context"] or "ext-local",
        external_contexts=lines(row["external_contexts"]),
        trunk_channels=lines(row["trunk_channels"]),
        record_internal=bool(row["record_internal"]),
        missed_owner=row["missed_owner"],
        recordings_folder=row["recordings_folder"],
        recordings_url=row["recordings_url"],
        webhook_token=_unsealed(row["webhook_token"]),
        extensions=extensions,
        version=str(row["updated_at"])
        + "|"
        + ",".join(f"{k}={v}" for k, v in sorted(extensions.items())),
    )
