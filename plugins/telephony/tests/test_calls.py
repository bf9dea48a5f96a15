"""Real captures replayed by a scripted PBX over TCP, through the long-lived service,
into the database: call log, timeline, missed-call tasks, de-duplication, reconnect."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from core.sealed import seal
from core.services.common import utcnow
from plugins.telephony.service import AmiService, Backoff
from plugins.telephony.tests.ami_server import (
    ScriptedAmiServer,
    as_trunk_call,
    blocks,
    capture,
)

CUSTOMER = "+74951234567"
STRANGER = "+74997654321"
ANSWERED_ID = "1781704172.3807878"
MISSED_ID = "1781705122.3809250"


async def configure(port: int, extensions: dict[str, int], **extra: Any) -> None:
    from plugins.telephony.config import settings_row
    from plugins.telephony.tables import TelephonyExtension, TelephonySettings

    await settings_row()
    await TelephonySettings.update(
        {
            TelephonySettings.ami_host: "127.0.0.1",
            TelephonySettings.ami_port: port,
            TelephonySettings.ami_username: "crm",
            TelephonySettings.ami_secret: seal("s3cret"),
            TelephonySettings.updated_at: utcnow(),
            **{getattr(TelephonySettings, k): v for k, v in extra.items()},
        }
    ).where(TelephonySettings.id == 1)
    await TelephonyExtension.delete(force=True)
    for extension, user_id in extensions.items():
        await TelephonyExtension.insert(TelephonyExtension(extension=extension, user=user_id))


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            value = await check()
            if value:
                return value
            await asyncio.sleep(0.02)


async def call_row(linkedid: str, state: str = "ended") -> dict[str, Any] | None:
    from plugins.telephony.tables import TelephonyCall

    return (
        await TelephonyCall.select()
        .where((TelephonyCall.call_key == f"ami:{linkedid}") & (TelephonyCall.state == state))
        .first()
    )


@pytest.fixture
async def pbx() -> AsyncIterator[ScriptedAmiServer]:
    server = await ScriptedAmiServer().start()
    yield server
    await server.stop()


@pytest.fixture
async def people(db: None, manager: dict[str, Any], admin: dict[str, Any]) -> dict[str, Any]:
    """Max (manager) answers 7002 and 7004 and is responsible for the known customer."""
    from core.services import clients

    client_id = await clients.create_client(
        {"name": "Known Customer", "phones": "8 (495) 123-45-67", "responsible": manager["id"]},
        manager["id"],
    )
    return {"manager": manager, "admin": admin, "client": client_id}


@pytest.fixture
async def service(pbx: ScriptedAmiServer, people: dict[str, Any]) -> AsyncIterator[AmiService]:
    await configure(pbx.port, {"7002": people["manager"]["id"], "7004": people["manager"]["id"]})
    running = AmiService(backoff=Backoff(0.05, 0.2), idle_check=0.1)
    task = asyncio.create_task(running.run())
    await asyncio.wait_for(running.connected.wait(), 10)
    yield running
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_answered_inbound_call_is_logged_once_with_timeline(
    pbx: ScriptedAmiServer, service: AmiService, people: dict[str, Any]
) -> None:
    from core.services import timeline
    from plugins.telephony.tables import TelephonyCall

    call = as_trunk_call(capture("pyfreepbx-answered.txt"), "7001", "84951234567")
    await pbx.send(call, chunk=512)
    row = await eventually(lambda: call_row(ANSWERED_ID))
    assert row["direction"] == "inbound" and row["result"] == "answered"
    assert row["external_number"] == CUSTOMER
    assert row["client"] == people["client"]
    assert row["user"] == people["manager"]["id"] and row["extension"] == "7002"
    assert row["answered_at"] is not None and row["ended_at"] is not None
    assert set(
        json.loads(row["channel_ids"])
        if isinstance(row["channel_ids"], str)
        else row["channel_ids"]
    ) == {
        ANSWERED_ID,
        "1781704172.3807879",
    }
    entries, _cursor = await timeline.page(people["client"])
    calls = [e for e in entries if e["kind"] == "telephony.call"]
    assert len(calls) == 1 and calls[0]["payload"]["result"] == "answered"

    await pbx.send(call)  # the same events again (a replay): nothing new
    await pbx.send(
        b"Event: Newchannel\r\nLinkedid: marker\r\nUniqueid: marker\r\nChannel: PJSIP/provider-1\r\nContext: from-pstn\r\nCallerIDNum: 1\r\n\r\n"
    )
    await eventually(lambda: call_row("marker", "ringing"))
    assert await TelephonyCall.count().where(TelephonyCall.call_key == f"ami:{ANSWERED_ID}") == 1
    entries, _cursor = await timeline.page(people["client"])
    assert len([e for e in entries if e["kind"] == "telephony.call"]) == 1


async def test_internal_capture_is_ignored_unless_internal_calls_are_logged(
    pbx: ScriptedAmiServer, service: AmiService, people: dict[str, Any]
) -> None:
    from plugins.telephony.tables import TelephonySettings

    await pbx.send(capture("pyfreepbx-answered.txt"))
    await TelephonySettings.update(
        {TelephonySettings.record_internal: True, TelephonySettings.updated_at: utcnow()}
    ).where(TelephonySettings.id == 1)
    await eventually(lambda: pbx_relogged(pbx, 2))
    await pbx.send(capture("pyfreepbx-missed.txt"))
    row = await eventually(lambda: call_row(MISSED_ID))
    assert row["direction"] == "internal" and row["result"] == "no_answer"
    assert await call_row(ANSWERED_ID) is None, "logged only once internal calls were switched on"


async def pbx_relogged(pbx: ScriptedAmiServer, count: int) -> bool:
    return pbx.logins >= count and bool(pbx.writers)


async def test_missed_calls_make_one_callback_task_until_someone_talks(
    pbx: ScriptedAmiServer, service: AmiService, people: dict[str, Any]
) -> None:
    from core.tables import Task
    from plugins.telephony.tables import TelephonyCallback

    missed = capture("pyfreepbx-missed.txt")
    await pbx.send(as_trunk_call(missed, "7003", "84951234567"))
    row = await eventually(lambda: call_row(MISSED_ID))
    assert row["result"] == "missed" and row["client"] == people["client"]
    tasks = await Task.select().where(Task.client == people["client"])
    assert len(tasks) == 1 and tasks[0]["assignee"] == people["manager"]["id"]
    assert CUSTOMER in tasks[0]["title"] and row["callback_task"] == tasks[0]["id"]

    await pbx.send(as_trunk_call(missed, "7003", "84951234567"))  # a replay
    await pbx.send(as_trunk_call(missed, "7003", "84951234567", linkedid_suffix="2"))
    second = await eventually(lambda: call_row(MISSED_ID + "2"))
    assert second["result"] == "missed" and second["callback_task"] == tasks[0]["id"]
    assert await Task.count().where(Task.client == people["client"]) == 1, "no duplicate task"
    callback = await TelephonyCallback.select().first()
    assert callback["missed_count"] == 2

    # The client calls again and is answered: the task is done by itself.
    answered = capture("pyfreepbx-answered.txt")
    await pbx.send(as_trunk_call(answered, "7001", "+7 495 123 45 67"))
    await eventually(lambda: call_row(ANSWERED_ID))
    task = await Task.select().where(Task.id == tasks[0]["id"]).first()
    assert task["done_at"] is not None
    assert await TelephonyCallback.count() == 0

    # Missed again after that: a new task.
    await pbx.send(as_trunk_call(missed, "7003", "84951234567", linkedid_suffix="3"))
    await eventually(lambda: call_row(MISSED_ID + "3"))
    assert await Task.count().where(Task.client == people["client"]) == 2


async def test_unknown_number_goes_to_the_configured_owner_or_who_rang(
    pbx: ScriptedAmiServer, service: AmiService, people: dict[str, Any]
) -> None:
    from core.tables import Task

    missed = capture("pyfreepbx-missed.txt")
    await pbx.send(as_trunk_call(missed, "7003", "84997654321"))
    row = await eventually(lambda: call_row(MISSED_ID))
    assert row["client"] is None and row["external_number"] == STRANGER
    task = await Task.select().where(Task.id == row["callback_task"]).first()
    assert task["assignee"] == people["manager"]["id"], "the user whose phone (7004) rang"
    assert task["client"] is None

    await configure(pbx.port, {"7004": people["manager"]["id"]}, missed_owner=people["admin"]["id"])
    await eventually(lambda: pbx_relogged(pbx, 2))
    await pbx.send(as_trunk_call(missed, "7003", "84990000001", linkedid_suffix="5"))
    row = await eventually(lambda: call_row(MISSED_ID + "5"))
    task = await Task.select().where(Task.id == row["callback_task"]).first()
    assert task["assignee"] == people["admin"]["id"]


def _split_at(data: bytes, marker: bytes) -> tuple[bytes, bytes]:
    parts = blocks(data)
    index = next(i for i, b in enumerate(parts) if marker in b)
    return b"".join(parts[:index]), b"".join(parts[index:])


async def test_call_in_progress_survives_a_reconnect(
    pbx: ScriptedAmiServer, service: AmiService, people: dict[str, Any]
) -> None:
    call = as_trunk_call(capture("pyfreepbx-answered.txt"), "7001", "84951234567")
    before, after = _split_at(call, b"Event: HangupRequest")
    await pbx.send(before)
    await eventually(lambda: call_row(ANSWERED_ID, "answered"))
    pbx.active_channels = [
        {"Channel": "PJSIP/provider-001600e9", "Uniqueid": ANSWERED_ID, "Linkedid": ANSWERED_ID},
        {
            "Channel": "PJSIP/7002-001600ea",
            "Uniqueid": "1781704172.3807879",
            "Linkedid": ANSWERED_ID,
        },
    ]
    await pbx.drop_clients()
    await eventually(lambda: pbx_relogged(pbx, 2))
    await asyncio.wait_for(service.connected.wait(), 10)
    assert await call_row(ANSWERED_ID, "answered"), "still open: the PBX still has it"
    await pbx.send(after)
    row = await eventually(lambda: call_row(ANSWERED_ID))
    assert row["result"] == "answered" and row["talk_seconds"] >= 0


async def test_call_that_ended_during_the_outage_is_closed_as_unknown(
    pbx: ScriptedAmiServer, service: AmiService, people: dict[str, Any]
) -> None:
    from core.tables import Task

    call = as_trunk_call(capture("pyfreepbx-missed.txt"), "7003", "84951234567")
    before, _after = _split_at(call, b"Event: DialEnd")
    await pbx.send(before)
    await eventually(lambda: call_row(MISSED_ID, "ringing"))
    pbx.active_channels = []
    await pbx.drop_clients()
    row = await eventually(lambda: call_row(MISSED_ID))
    assert row["result"] == "unknown"
    assert await Task.count() == 0, "no task for a call whose outcome is unknown"


async def test_service_reports_a_refused_login_and_recovers(
    pbx: ScriptedAmiServer, people: dict[str, Any]
) -> None:
    from plugins.telephony.config import settings_row

    await configure(pbx.port, {})
    pbx.secret = "changed-on-the-pbx"
    running = AmiService(backoff=Backoff(0.05, 0.1), idle_check=0.1)
    task = asyncio.create_task(running.run())
    try:
        row = await eventually(lambda: _status(settings_row, "error"))
        assert "refused" in row["status_detail"]
        pbx.secret = "s3cret"
        row = await eventually(lambda: _status(settings_row, "connected"))
        assert row["pbx_version"] == "5.0.5"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _status(settings_row: Any, status: str) -> dict[str, Any] | None:
    row = await settings_row()
    return row if row["status"] == status else None


async def test_stale_open_calls_are_closed(people: dict[str, Any]) -> None:
    from datetime import timedelta

    from plugins.telephony.calls import CallStore

    store = CallStore()
    await store.start(
        "hook:old", direction="inbound", number=CUSTOMER, at=utcnow() - timedelta(hours=9)
    )
    await store.start("hook:new", direction="inbound", number=CUSTOMER)
    assert await store.close_stale() == 1
    from plugins.telephony.tables import TelephonyCall

    rows = {r["call_key"]: r for r in await TelephonyCall.select()}
    assert rows["hook:old"]["result"] == "unknown" and rows["hook:new"]["state"] == "ringing"
