"""The PBX connection: the long-lived owner session, click-to-call, the connection test.

The long-lived AMI session (`run_ami_service`) is a core background service, so it
runs in exactly one process of the install (the embedded web process, or the one
``kartoteka scheduler``). Click-to-call requests arrive at any web process; each
opens its own short AMI session for the Originate instead of messaging the owner:
no queue to lose requests, and the user sees the PBX's answer directly.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from datetime import datetime
from typing import Any

from piccolo.columns import Column

from core.i18n import _
from core.services.common import utcnow
from plugins.telephony.ami.client import AmiAuthError, AmiClient, AmiError
from plugins.telephony.calls import AmiCallTracker, CallStore
from plugins.telephony.config import TelephonyConfig, load_config
from plugins.telephony.model import OriginateResult
from plugins.telephony.tables import TelephonySettings

log = logging.getLogger(__name__)

FIRST_RETRY = 1.0
LONGEST_RETRY = 60.0
IDLE_CHECK = 5.0
"""How often the owner checks whether the settings changed (then it reconnects)."""
ORIGINATE_RING_MS = 30_000
EVENT_MASK = "call"
_EXTENSION_STATES = {
    "-1": "not_found",
    "0": "idle",
    "1": "in_use",
    "2": "busy",
    "4": "unavailable",
    "8": "ringing",
    "9": "in_use",
    "16": "on_hold",
}


class Backoff:
    """1 s, 2 s, 4 s ... up to a minute, with jitter so many installs do not stampede."""

    def __init__(self, first: float = FIRST_RETRY, longest: float = LONGEST_RETRY) -> None:
        self.first, self.longest = first, longest
        self.current = first

    def reset(self) -> None:
        self.current = self.first

    def next(self) -> float:
        delay = self.current
        self.current = min(self.current * 2, self.longest)
        return delay * random.uniform(0.8, 1.2)


async def set_status(status: str, detail: str = "", version: str | None = None) -> None:
    values: dict[Column | str, Any] = {
        TelephonySettings.status: status,
        TelephonySettings.status_detail: detail[:500],
        TelephonySettings.status_at: utcnow(),
    }
    if version is not None:
        values[TelephonySettings.pbx_version] = version[:64]
    await TelephonySettings.update(values).where(TelephonySettings.id == 1)


async def active_channels(ami: AmiClient) -> dict[str, set[str]]:
    """Linkedid -> Uniqueids of every channel the PBX has up right now."""
    active: dict[str, set[str]] = {}
    for item in await ami.send_list_action("CoreShowChannels"):
        if item.event == "CoreShowChannel" and item.get("Linkedid"):
            active.setdefault(item.get("Linkedid"), set()).add(item.get("Uniqueid"))
    return active


class AmiService:
    """The install's one AMI session: connect, follow calls, reconnect with backoff."""

    def __init__(
        self,
        backoff: Backoff | None = None,
        idle_check: float = IDLE_CHECK,
        keepalive: float = 30.0,
    ) -> None:
        self.backoff = backoff or Backoff()
        self.idle_check = idle_check
        self.keepalive = keepalive
        self.store = CallStore()
        self.tracker: AmiCallTracker | None = None
        self.lost_at: datetime | None = None
        self.connected = asyncio.Event()

    async def run(self) -> None:
        """Until cancelled; every failure is reported on the settings page and retried."""
        try:
            while True:
                config = await load_config()
                await self.store.close_stale()
                if not config.ami_configured:
                    await set_status("off", "")
                    await self._wait_for_change(config)
                    continue
                try:
                    await self._session(config)
                except AmiAuthError as exc:
                    await set_status("error", str(exc))
                except AmiError as exc:
                    await set_status("error", str(exc))
                    log.warning("AMI: %s", exc)
                self.connected.clear()
                self.lost_at = self.lost_at or utcnow()
                await asyncio.sleep(self.backoff.next())
        finally:
            self.connected.clear()

    async def _wait_for_change(self, config: TelephonyConfig) -> None:
        while (await load_config()).version == config.version:
            await asyncio.sleep(self.idle_check)

    async def _session(self, config: TelephonyConfig) -> None:
        await set_status("connecting", f"{config.ami_host}:{config.ami_port}")
        async with AmiClient(
            config.credentials(), events=EVENT_MASK, keepalive=self.keepalive
        ) as ami:
            if self.tracker is None:
                self.tracker = AmiCallTracker(config, self.store)
            self.tracker.config = config
            await self.tracker.reconcile(await active_channels(ami), self.lost_at)
            self.lost_at = None
            self.backoff.reset()
            await set_status("connected", "", version=ami.version)
            self.connected.set()
            watcher = asyncio.create_task(self._close_on_change(ami, config))
            try:
                async for message in ami.events():
                    try:
                        await self.tracker.handle(message)
                    except Exception:  # one bad event must not end the session
                        log.exception("AMI event %s could not be recorded", message.event)
            finally:
                self.lost_at = utcnow()
                watcher.cancel()

    async def _close_on_change(self, ami: AmiClient, config: TelephonyConfig) -> None:
        """Reconnect with the new settings when an admin saves them; expire lost calls."""
        while True:
            await asyncio.sleep(self.idle_check)
            if self.tracker is not None:
                await self.tracker.expire()
            if (await load_config()).version != config.version:
                await ami.close_transport("settings changed")
                return


async def run_ami_service() -> None:
    """The background service declared by the plugin's hooks."""
    await AmiService().run()


async def test_connection(config: TelephonyConfig) -> tuple[bool, str]:
    """Log in with these settings and ask the PBX its version: (ok, what to tell the admin)."""
    if not config.ami_configured:
        return False, _("Enter the PBX address and the AMI user first.")
    try:
        async with AmiClient(config.credentials(), events="off", keepalive=0) as ami:
            reply = await ami.send_action("CoreSettings")
            version = reply.get("AsteriskVersion") or "?"
            return True, _(
                "Connected: Asterisk %(version)s, AMI %(ami)s.", version=version, ami=ami.version
            )
    except AmiAuthError:
        return False, _("The PBX refused the AMI user name or secret.")
    except AmiError as exc:
        return False, _("Cannot talk to the PBX: %(reason)s", reason=str(exc))


def dialable(number: str) -> str:
    """What the PBX dials: digits, with a leading + kept (the dialplan decides the rest)."""
    number = number.strip()
    digits = re.sub(r"\D", "", number)
    return ("+" if number.startswith("+") else "") + digits


async def originate(user_id: int, number: str) -> OriginateResult:
    """Ring the user's phone, then dial ``number`` from it (click-to-call).

    Waits for the PBX's ``OriginateResponse``, so the user learns whether the phone
    rang and was picked up, was busy or is not connected.
    """
    config = await load_config()
    target = dialable(number)
    if len(target.lstrip("+")) < 2:
        return OriginateResult(False, _("This is not a number the PBX can dial."))
    extension = config.extension_of(user_id)
    if extension is None:
        return OriginateResult(False, _("No phone extension is assigned to you."))
    if not config.ami_configured:
        return OriginateResult(False, _("The PBX connection is not set up."))
    try:
        async with AmiClient(config.credentials(), events=EVENT_MASK, keepalive=0) as ami:
            state = await _extension_state(ami, extension, config.hint_context)
            if state in ("busy", "in_use", "on_hold", "ringing"):
                return OriginateResult(False, _("Your phone %(ext)s is busy.", ext=extension))
            if state == "unavailable":
                return OriginateResult(
                    False, _("Your phone %(ext)s is not connected to the PBX.", ext=extension)
                )
            return await _originate(ami, config, extension, target)
    except AmiAuthError:
        return OriginateResult(False, _("The PBX refused the CRM's AMI login."))
    except AmiError as exc:
        return OriginateResult(False, _("The PBX cannot be reached: %(reason)s", reason=str(exc)))


async def _extension_state(ami: AmiClient, extension: str, context: str) -> str:
    try:
        reply = await ami.send_action("ExtensionState", Exten=extension, Context=context)
    except AmiError:
        return "unknown"
    if reply.response.lower() != "success":
        return "unknown"
    return _EXTENSION_STATES.get(reply.get("Status"), "unknown")


async def _originate(
    ami: AmiClient, config: TelephonyConfig, extension: str, target: str
) -> OriginateResult:
    action_id = f"kartoteka-call-{random.getrandbits(48):x}"
    reply = await ami.send_action(
        "Originate",
        ActionID=action_id,
        Channel=config.originate_channel.format(extension=extension),
        Context=config.originate_context,
        Exten=target,
        Priority=1,
        CallerID=f'"{target}" <{target}>',
        Timeout=ORIGINATE_RING_MS,
        Async="true",
    )
    if reply.response.lower() != "success":
        return OriginateResult(
            False, _("The PBX did not place the call: %(reason)s", reason=reply.get("Message"))
        )
    try:
        async with asyncio.timeout(ORIGINATE_RING_MS / 1000 + 10):
            async for event in ami.events():
                if event.event == "OriginateResponse" and event.action_id == action_id:
                    return _originate_outcome(event.response, event.get("Reason"), extension)
    except TimeoutError:
        pass
    return OriginateResult(True, _("The call was queued; the PBX did not report back."))


def _originate_outcome(response: str, reason: str, extension: str) -> OriginateResult:
    if response.lower() == "success":
        return OriginateResult(True, _("Your phone answered; dialling the number."))
    if reason == "5":
        return OriginateResult(False, _("Your phone %(ext)s is busy.", ext=extension))
    if reason in ("3", "0"):
        return OriginateResult(False, _("Your phone %(ext)s did not answer.", ext=extension))
    return OriginateResult(False, _("Your phone %(ext)s could not be reached.", ext=extension))
