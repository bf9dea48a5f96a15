"""The call model: one record per call, fed by AMI events or by a cloud PBX's web hook.

`CallStore` writes calls and everything that follows from them (timeline entry,
"call back" task, screen pop); every write is keyed by the call and conditional,
so a replayed event stream, a reconnect or a repeated web hook changes nothing twice.
`AmiCallTracker` turns the AMI event stream into `CallStore` calls, correlating the
channels of one call by their ``Linkedid``.
"""

from __future__ import annotations

import json
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from core import access
from core.i18n import _
from core.services import tasks, timeline
from core.services.clients import find_client
from core.services.common import as_utc, utcnow, write
from core.tables import Client, Task
from plugins.telephony import popup
from plugins.telephony.ami.protocol import AmiMessage
from plugins.telephony.config import (
    TelephonyConfig,
    channel_extension,
    external_number,
    load_config,
)
from plugins.telephony.model import CallView
from plugins.telephony.tables import TelephonyCall, TelephonyCallback

log = logging.getLogger(__name__)

RESULTS = ("answered", "missed", "busy", "failed", "no_answer", "unknown")
MAX_CALL_AGE = timedelta(hours=8)
"""A call still open after this long lost its end (PBX crash, lost web hook)."""
_DIAL_FAILURES = {"BUSY": "busy", "CHANUNAVAIL": "failed", "CONGESTION": "failed"}
_DIGITS = re.compile(r"\+?\d{5,}")


def _decode(value: Any, default: Any) -> Any:
    if isinstance(value, str):
        return json.loads(value) if value else default
    return value if value is not None else default


def call_view(row: dict[str, Any]) -> CallView:
    state = row["state"]
    return CallView(
        linkedid=row["call_key"].split(":", 1)[1],
        direction=row["direction"],
        external_number=row["external_number"],
        state=state,
        ringing_user_ids=tuple(_decode(row["ringing_users"], [])),
        answered_by_user_id=row["user"] if row["answered_at"] is not None else None,
        client_id=row["client"],
        started_at=as_utc(row["started_at"]),
    )


class CallStore:
    """Idempotent writes of the call model, shared by the AMI tracker and the web hook."""

    async def _get(self, key: str) -> dict[str, Any] | None:
        return await TelephonyCall.select().where(TelephonyCall.call_key == key).first()

    async def exists(self, key: str) -> bool:
        return await TelephonyCall.exists().where(TelephonyCall.call_key == key)

    async def _announce(self, key: str) -> None:
        row = await self._get(key)
        if row is None or row["direction"] != "inbound" or not row["external_number"]:
            return
        try:
            await popup.announce(call_view(row))
        except Exception:  # a failed screen pop must never cost the call record
            log.exception("screen pop for %s failed", key)

    async def start(
        self,
        key: str,
        *,
        direction: str,
        number: str,
        did: str = "",
        extension: str = "",
        user_id: int | None = None,
        ringing_users: tuple[int, ...] = (),
        channel_ids: list[str] | None = None,
        at: datetime | None = None,
    ) -> bool:
        """Open the call unless it exists; False when it existed already."""
        normalized = external_number(number) if direction != "internal" else number
        client_id = None
        if direction != "internal" and normalized:
            client_id = await find_client(phone=normalized)
        inserted = (
            await TelephonyCall.insert(
                TelephonyCall(
                    call_key=key,
                    direction=direction,
                    external_number=normalized,
                    did=did,
                    extension=extension,
                    user=user_id,
                    client=client_id,
                    state="ringing",
                    started_at=at or utcnow(),
                    ringing_users=json.dumps(list(ringing_users)),
                    channel_ids=json.dumps(channel_ids or []),
                )
            )
            .on_conflict(target=TelephonyCall.call_key, action="DO NOTHING")
            .returning(TelephonyCall.id)
        )
        if inserted:
            await self._announce(key)
        return bool(inserted)

    async def ringing(
        self, key: str, ringing_users: tuple[int, ...], channel_ids: list[str] | None = None
    ) -> None:
        values: dict[Any, Any] = {TelephonyCall.ringing_users: json.dumps(list(ringing_users))}
        if channel_ids is not None:
            values[TelephonyCall.channel_ids] = json.dumps(channel_ids)
        changed = (
            await TelephonyCall.update(values)
            .where((TelephonyCall.call_key == key) & (TelephonyCall.state == "ringing"))
            .returning(TelephonyCall.id)
        )
        if changed:
            await self._announce(key)

    async def answered(
        self, key: str, *, user_id: int | None, extension: str = "", at: datetime | None = None
    ) -> None:
        values: dict[Any, Any] = {
            TelephonyCall.state: "answered",
            TelephonyCall.answered_at: at or utcnow(),
        }
        if user_id is not None:
            values[TelephonyCall.user] = user_id
        if extension:
            values[TelephonyCall.extension] = extension
        changed = (
            await TelephonyCall.update(values)
            .where((TelephonyCall.call_key == key) & (TelephonyCall.state == "ringing"))
            .returning(TelephonyCall.id)
        )
        if changed:
            await self._announce(key)

    async def recording(self, key: str, recording: str) -> None:
        await TelephonyCall.update({TelephonyCall.recording: recording[:500]}).where(
            TelephonyCall.call_key == key
        )

    async def end(
        self,
        key: str,
        *,
        result: str,
        at: datetime | None = None,
        channel_ids: list[str] | None = None,
    ) -> bool:
        """Close the call once: timeline entry, missed-call task, callback resolution.

        False when the call is unknown or was closed before (a replay).
        """
        assert result in RESULTS, result
        ended_at = at or utcnow()
        with access.acting_as(access.SYSTEM):
            async with write():
                row = await self._get(key)
                if row is None or row["state"] == "ended":
                    return False
                answered_at = as_utc(row["answered_at"])
                if result == "answered" and answered_at is None:
                    answered_at = ended_at
                talk = int((ended_at - answered_at).total_seconds()) if answered_at else 0
                values: dict[Any, Any] = {
                    TelephonyCall.state: "ended",
                    TelephonyCall.result: result,
                    TelephonyCall.ended_at: ended_at,
                    TelephonyCall.talk_seconds: max(talk, 0),
                    TelephonyCall.answered_at: answered_at,
                }
                if channel_ids is not None:
                    values[TelephonyCall.channel_ids] = json.dumps(channel_ids)
                claimed = (
                    await TelephonyCall.update(values)
                    .where((TelephonyCall.call_key == key) & (TelephonyCall.state != "ended"))
                    .returning(TelephonyCall.id)
                )
                if not claimed:
                    return False
                row = {**row, "result": result, "talk_seconds": max(talk, 0), "state": "ended"}
                await self._after_end(row)
        await self._announce(key)
        return True

    async def _after_end(self, row: dict[str, Any]) -> None:
        number = row["external_number"]
        if row["client"] is not None:
            entry_id = await timeline.add_entry(
                row["client"],
                "telephony.call",
                {
                    "call_id": row["id"],
                    "direction": row["direction"],
                    "result": row["result"],
                    "number": number,
                    "talk_seconds": row["talk_seconds"],
                    "user_id": row["user"],
                },
                author_id=row["user"],
                occurred_at=as_utc(row["started_at"]),
            )
            await TelephonyCall.update({TelephonyCall.timeline_entry: entry_id}).where(
                TelephonyCall.id == row["id"]
            )
        if row["direction"] == "internal" or not number:
            return
        if row["result"] == "answered":
            await _resolve_callback(number)
        elif row["direction"] == "inbound" and row["result"] == "missed":
            await _ask_for_callback(row)

    async def close_stale(self, older_than: timedelta = MAX_CALL_AGE) -> int:
        """Close calls whose end never arrived, as ``unknown``; returns how many."""
        limit = utcnow() - older_than
        rows = await TelephonyCall.select(TelephonyCall.call_key, TelephonyCall.answered_at).where(
            (TelephonyCall.state != "ended") & (TelephonyCall.started_at < limit)
        )
        closed = 0
        for row in rows:
            result = "answered" if row["answered_at"] is not None else "unknown"
            closed += await self.end(row["call_key"], result=result)
        return closed


async def _owner_for_missed_call(row: dict[str, Any]) -> int | None:
    """The client's manager, else the configured owner, else whoever's phone rang."""
    if row["client"] is not None:
        client = await Client.select(Client.responsible).where(Client.id == row["client"]).first()
        if client:
            return int(client["responsible"])
    config = await load_config()
    if config.missed_owner is not None:
        return config.missed_owner
    ringing = _decode(row["ringing_users"], [])
    return int(ringing[0]) if ringing else row["user"]


async def _open_task(task_id: int | None) -> bool:
    if task_id is None:
        return False
    return await Task.exists().where((Task.id == task_id) & Task.done_at.is_null())


async def _ask_for_callback(row: dict[str, Any]) -> None:
    """One open "call back" task per number; a repeated missed call joins it."""
    number = row["external_number"]
    now = as_utc(row["started_at"])
    existing = await TelephonyCallback.select().where(TelephonyCallback.number == number).first()
    if existing and await _open_task(existing["task"]):
        await TelephonyCallback.update(
            {
                TelephonyCallback.missed_count: TelephonyCallback.missed_count + 1,
                TelephonyCallback.last_missed_at: now,
            }
        ).where(TelephonyCallback.id == existing["id"])
        await TelephonyCall.update({TelephonyCall.callback_task: existing["task"]}).where(
            TelephonyCall.id == row["id"]
        )
        return
    owner = await _owner_for_missed_call(row)
    if owner is None:
        log.warning("missed call from %s: nobody to call back (set a missed-call owner)", number)
        return
    task_id = await tasks.create_task(
        {
            "title": _("Call back %(number)s", number=number),
            "description": _("Missed call at %(time)s.", time=now.strftime("%Y-%m-%d %H:%M UTC")),
            "due_at": utcnow(),
            "priority": "3",
            "assignee": owner,
            "client": row["client"],
        },
        actor_id=None,
    )
    if existing:
        await TelephonyCallback.update(
            {
                TelephonyCallback.task: task_id,
                TelephonyCallback.missed_count: 1,
                TelephonyCallback.last_missed_at: now,
            }
        ).where(TelephonyCallback.id == existing["id"])
    else:
        await TelephonyCallback.insert(
            TelephonyCallback(number=number, task=task_id, missed_count=1, last_missed_at=now)
        )
    await TelephonyCall.update({TelephonyCall.callback_task: task_id}).where(
        TelephonyCall.id == row["id"]
    )


async def _resolve_callback(number: str) -> None:
    """Someone talked with this number: its "call back" task is done."""
    existing = await TelephonyCallback.select().where(TelephonyCallback.number == number).first()
    if existing is None:
        return
    if existing["task"] is not None and await _open_task(existing["task"]):
        await tasks.complete_task(existing["task"], actor_id=None)
    await TelephonyCallback.delete().where(TelephonyCallback.id == existing["id"])


# --- AMI -------------------------------------------------------------------------------


@dataclass
class _LiveCall:
    """What the tracker knows about a call between its first and last channel."""

    linkedid: str
    direction: str
    number: str = ""
    did: str = ""
    extension: str = ""
    """Our side: the extension that placed (outbound) or answered (inbound) the call."""
    channels: set[str] = field(default_factory=set)
    channel_ids: list[str] = field(default_factory=list)
    trunk_channels: set[str] = field(default_factory=set)
    ringing_extensions: list[str] = field(default_factory=list)
    answered_at: datetime | None = None
    last_dial_status: str = ""
    stored: bool = False
    last_event_at: datetime = field(default_factory=utcnow)

    @property
    def key(self) -> str:
        return f"ami:{self.linkedid}"


def _looks_external(exten: str) -> bool:
    return bool(_DIGITS.fullmatch(exten.strip()))


def _event_time(message: AmiMessage) -> datetime:
    stamp = message.get("Timestamp")
    if stamp:
        try:
            return datetime.fromtimestamp(float(stamp), UTC)
        except (ValueError, OverflowError, OSError):
            pass
    return utcnow()


class AmiCallTracker:
    """AMI events in, `CallStore` calls out. One instance per AMI connection owner."""

    ENDED_MEMORY = 10_000

    def __init__(self, config: TelephonyConfig, store: CallStore | None = None) -> None:
        self.config = config
        self.store = store or CallStore()
        self.live: dict[str, _LiveCall] = {}
        self.ended: OrderedDict[str, None] = OrderedDict()

    async def handle(self, message: AmiMessage) -> None:
        handler = getattr(self, f"_on_{message.event.lower()}", None)
        linkedid = message.get("Linkedid")
        if handler is None or not linkedid or linkedid in self.ended:
            return
        await handler(message, linkedid, _event_time(message))

    def _keep(self, call: _LiveCall) -> bool:
        return call.direction != "internal" or self.config.record_internal

    async def _store(self, call: _LiveCall, at: datetime) -> None:
        if call.stored or not self._keep(call):
            return
        call.stored = True
        created = await self.store.start(
            call.key,
            direction=call.direction,
            number=call.number,
            did=call.did,
            extension=call.extension,
            user_id=self.config.extensions.get(call.extension),
            ringing_users=self.config.users_of(call.ringing_extensions),
            channel_ids=call.channel_ids,
            at=at,
        )
        if not created and not await self._is_open(call.key):
            self._forget(call, ended=True)  # a replay of a call we closed already

    async def _is_open(self, key: str) -> bool:
        return await TelephonyCall.exists().where(
            (TelephonyCall.call_key == key) & (TelephonyCall.state != "ended")
        )

    def _forget(self, call: _LiveCall, ended: bool) -> None:
        self.live.pop(call.linkedid, None)
        if ended:
            self.ended[call.linkedid] = None
            while len(self.ended) > self.ENDED_MEMORY:
                self.ended.popitem(last=False)

    async def _on_newchannel(self, message: AmiMessage, linkedid: str, at: datetime) -> None:
        uniqueid = message.get("Uniqueid")
        channel = message.get("Channel")
        call = self.live.get(linkedid)
        if call is None:
            if uniqueid != linkedid:
                return  # we joined mid-call; reconcile() handles calls we knew
            call = self._new_call(message, linkedid)
            self.live[linkedid] = call
        call.last_event_at = at
        call.channels.add(uniqueid)
        if uniqueid not in call.channel_ids:
            call.channel_ids.append(uniqueid)
        if uniqueid != linkedid and self.config.is_trunk(channel):
            call.trunk_channels.add(uniqueid)
            if call.direction == "internal":
                call.direction = "outbound"
        if call.direction == "inbound" or (call.direction == "outbound" and call.number):
            await self._store(call, at)

    def _new_call(self, message: AmiMessage, linkedid: str) -> _LiveCall:
        channel, context = message.get("Channel"), message.get("Context")
        exten = message.get("Exten")
        if self.config.is_trunk(channel, context):
            return _LiveCall(linkedid, "inbound", number=message.get("CallerIDNum"), did=exten)
        own = channel_extension(channel)
        if _looks_external(exten):
            return _LiveCall(linkedid, "outbound", number=exten, extension=own)
        return _LiveCall(linkedid, "internal", number=exten, extension=own)

    async def _on_dialbegin(self, message: AmiMessage, linkedid: str, at: datetime) -> None:
        call = self.live.get(linkedid)
        if call is None:
            return
        call.last_event_at = at
        dest, dest_id = message.get("DestChannel"), message.get("DestUniqueid")
        if dest_id in call.trunk_channels or self.config.is_trunk(dest, message.get("DestContext")):
            call.trunk_channels.add(dest_id)
            if call.direction != "inbound":
                call.direction = "outbound"
                dialed = _DIGITS.search(message.get("DialString"))
                call.number = dialed.group(0) if dialed else message.get("DestCallerIDNum")
                await self._store(call, at)
            return
        extension = channel_extension(dest)
        if extension and extension not in call.ringing_extensions:
            call.ringing_extensions.append(extension)
            if call.stored:
                await self.store.ringing(
                    call.key, self.config.users_of(call.ringing_extensions), call.channel_ids
                )

    async def _on_dialend(self, message: AmiMessage, linkedid: str, at: datetime) -> None:
        call = self.live.get(linkedid)
        if call is None:
            return
        call.last_event_at = at
        status = message.get("DialStatus").upper()
        call.last_dial_status = status
        if status != "ANSWER" or call.answered_at is not None:
            return
        call.answered_at = at
        dest_id = message.get("DestUniqueid")
        if dest_id in call.trunk_channels:  # the customer picked up an outbound call
            if call.stored:
                await self.store.answered(call.key, user_id=None, at=at)
            return
        if call.direction == "outbound":
            return  # an agent picking up the first leg of a click-to-call is not the answer
        extension = channel_extension(message.get("DestChannel"))
        call.extension = extension or call.extension
        if call.stored:
            user_id = self.config.extensions.get(extension)
            await self.store.answered(call.key, user_id=user_id, extension=extension, at=at)

    async def _on_varset(self, message: AmiMessage, linkedid: str, at: datetime) -> None:
        call = self.live.get(linkedid)
        if call is None or message.get("Variable") != "MIXMONITOR_FILENAME":
            return
        if call.stored and message.get("Value"):
            await self.store.recording(call.key, message.get("Value"))

    async def _on_hangup(self, message: AmiMessage, linkedid: str, at: datetime) -> None:
        call = self.live.get(linkedid)
        if call is None:
            return
        call.last_event_at = at
        call.channels.discard(message.get("Uniqueid"))
        if call.channels:
            return
        self._forget(call, ended=True)
        if call.direction == "internal" and self.config.record_internal:
            await self._store(call, at)
        if not call.stored:
            return
        await self.store.end(
            call.key, result=self._result(call), at=at, channel_ids=call.channel_ids
        )

    async def expire(self, older_than: timedelta = MAX_CALL_AGE) -> None:
        """Forget calls silent for too long (their hang-up was lost) and close them."""
        limit = utcnow() - older_than
        for call in [c for c in self.live.values() if c.last_event_at < limit]:
            self._forget(call, ended=True)
            if call.stored:
                result = "answered" if call.answered_at else "unknown"
                await self.store.end(call.key, result=result, at=call.last_event_at)

    def _result(self, call: _LiveCall) -> str:
        if call.answered_at is not None:
            return "answered"
        if call.direction == "inbound":
            return "missed"
        return _DIAL_FAILURES.get(call.last_dial_status, "no_answer")

    async def reconcile(self, active: dict[str, set[str]], lost_at: datetime | None) -> None:
        """After (re)connecting: calls still up go on, the rest are closed now.

        ``active`` maps each Linkedid the PBX still has to its channels' Uniqueids
        (from ``CoreShowChannels``). A call that ended while we were away is closed
        as ``unknown`` (or ``answered`` if we saw the answer) at the moment the
        connection was lost: its real end is not knowable.
        """
        for linkedid, call in list(self.live.items()):
            if linkedid in active:
                call.channels = set(active[linkedid])
                continue
            self._forget(call, ended=True)
            if call.stored:
                result = "answered" if call.answered_at else "unknown"
                await self.store.end(call.key, result=result, at=lost_at)
        open_rows = await TelephonyCall.select().where(
            (TelephonyCall.state != "ended") & TelephonyCall.call_key.like("ami:%")
        )
        for row in open_rows:
            linkedid = row["call_key"].split(":", 1)[1]
            if linkedid in self.live:
                continue
            if linkedid in active:  # known from the database: follow it from here
                self.live[linkedid] = _LiveCall(
                    linkedid,
                    row["direction"],
                    number=row["external_number"],
                    did=row["did"],
                    extension=row["extension"],
                    channels=set(active[linkedid]),
                    channel_ids=_decode(row["channel_ids"], []),
                    answered_at=as_utc(row["answered_at"]),
                    stored=True,
                )
                continue
            result = "answered" if row["answered_at"] is not None else "unknown"
            await self.store.end(row["call_key"], result=result, at=lost_at)
