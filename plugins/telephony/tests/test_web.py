"""Settings page, web hook, journal and card tab, recordings, click-to-call, KPIs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from core.services.common import utcnow
from plugins.telephony.tests.ami_server import ScriptedAmiServer, ServerThread, capture
from plugins.telephony.tests.test_calls import CUSTOMER, configure
from tests.support import field_error, login, post

SETTINGS_FORM = {
    "ami_host": "pbx.local",
    "ami_port": "5038",
    "ami_username": "crm",
    "ami_secret": "very-secret",
    "originate_channel": "PJSIP/{extension}",
    "originate_context": "from-internal",
    "hint_context": "ext-local",
    "external_contexts": "from-pstn\nfrom-trunk",
    "trunk_channels": "",
    "recordings_folder": "",
    "recordings_url": "",
    "missed_owner": "",
    "extensions": "101 = manager",
}


@pytest.fixture
async def pbx() -> AsyncIterator[ScriptedAmiServer]:
    server = await ScriptedAmiServer().start()
    yield server
    await server.stop()


async def test_settings_are_validated_sealed_and_mapped(
    as_admin: Any, manager: dict[str, Any]
) -> None:
    from plugins.telephony.config import load_config, settings_row
    from plugins.telephony.tables import TelephonyExtension

    page = await as_admin.get("/p/telephony/settings")
    assert page.status_code == 200 and "Test connection" in page.text
    bad = await post(
        as_admin,
        "/p/telephony/settings",
        {**SETTINGS_FORM, "ami_port": "70000", "extensions": "101 = nobody\nxyz"},
    )
    assert bad.status_code == 422
    assert field_error(bad.text, "ami_port") and field_error(bad.text, "extensions")
    assert (await settings_row())["ami_host"] == "", "nothing half-saved"

    saved = await post(as_admin, "/p/telephony/settings", SETTINGS_FORM)
    assert saved.status_code == 200 and "Settings saved." in saved.text
    row = await settings_row()
    assert row["ami_secret"] and "very-secret" not in row["ami_secret"], "stored sealed"
    assert "very-secret" not in saved.text
    config = await load_config()
    assert config.ami_secret == "very-secret" and config.extensions == {"101": manager["id"]}

    await post(as_admin, "/p/telephony/settings", {**SETTINGS_FORM, "ami_secret": ""})
    assert (await load_config()).ami_secret == "very-secret", "an empty field keeps the secret"
    assert await TelephonyExtension.count() == 1


async def test_settings_need_their_permission(as_manager: Any) -> None:
    assert (await as_manager.get("/p/telephony/settings")).status_code == 403


@pytest.fixture
def pbx_thread() -> Iterator[ScriptedAmiServer]:
    running = ServerThread()
    yield running.server
    running.stop()


async def test_test_connection_button(as_admin: Any, pbx_thread: ScriptedAmiServer) -> None:
    pbx = pbx_thread
    form = {
        **SETTINGS_FORM,
        "ami_host": "127.0.0.1",
        "ami_port": str(pbx.port),
        "ami_secret": "s3cret",
    }
    ok = await post(as_admin, "/p/telephony/settings/test", form)
    assert "Connected: Asterisk 16.30.0, AMI 5.0.5." in ok.text
    refused = await post(as_admin, "/p/telephony/settings/test", {**form, "ami_secret": "nope"})
    assert "refused" in refused.text
    status = await as_admin.get("/p/telephony/settings/status")
    assert 'id="telephony-status"' in status.text


async def _webhook_token(as_admin: Any) -> str:
    import re

    page = await post(as_admin, "/p/telephony/settings/webhook-token", {})
    return re.search(r'id="webhook-token">([^<]+)<', page.text).group(1)  # type: ignore[union-attr]


async def test_webhook_feeds_the_same_call_model(as_admin: Any, manager: dict[str, Any]) -> None:
    from core.services import clients
    from core.tables import Task
    from plugins.telephony.tables import TelephonyCall

    await configure(1, {"101": manager["id"]})
    client_id = await clients.create_client(
        {"name": "Cloud Customer", "phones": CUSTOMER, "responsible": manager["id"]}, manager["id"]
    )
    token = await _webhook_token(as_admin)
    as_admin.cookies.clear()  # the PBX has no session
    url = "/p/telephony/webhook"
    auth = {"authorization": f"Bearer {token}"}
    assert (await as_admin.post(url, json={"event": "call.started"})).status_code == 401
    wrong = {"authorization": "Bearer nope"}
    assert (await as_admin.post(url, json={}, headers=wrong)).status_code == 401
    assert (await as_admin.post(url, content=b"{not json", headers=auth)).status_code == 400
    invalid = await as_admin.post(
        url, json={"event": "call.started", "call_id": "c1"}, headers=auth
    )
    assert invalid.status_code == 422 and "direction" in invalid.json()["detail"]

    start = {
        "event": "call.started",
        "call_id": "c1",
        "direction": "inbound",
        "external_number": "8 495 123-45-67",
        "ringing_extensions": ["101"],
        "at": "2026-11-23T10:00:00Z",
    }
    assert (await as_admin.post(url, json=start, headers=auth)).json()["result"] == "started"
    assert (await as_admin.post(url, json=start, headers=auth)).json()["result"] == "duplicate"
    answered = {
        "event": "call.answered",
        "call_id": "c1",
        "extension": "101",
        "at": "2026-11-23T10:00:05Z",
    }
    assert (await as_admin.post(url, json=answered, headers=auth)).status_code == 200
    ended = {
        "event": "call.ended",
        "call_id": "c1",
        "result": "answered",
        "at": "2026-11-23T10:01:05Z",
    }
    assert (await as_admin.post(url, json=ended, headers=auth)).json()["result"] == "ended"
    assert (await as_admin.post(url, json=ended, headers=auth)).json()["result"] == "duplicate"
    rec = {
        "event": "recording.ready",
        "call_id": "c1",
        "recording_url": "https://pbx.example/r/c1.mp3",
    }
    assert (await as_admin.post(url, json=rec, headers=auth)).status_code == 200
    row = await TelephonyCall.select().where(TelephonyCall.call_key == "hook:c1").first()
    assert row["client"] == client_id and row["user"] == manager["id"]
    assert row["talk_seconds"] == 60 and row["result"] == "answered"
    assert row["recording"] == "https://pbx.example/r/c1.mp3"

    # A cloud PBX that only sends a CDR-like end for a missed call.
    cdr = {
        "event": "call.ended",
        "call_id": "c2",
        "direction": "inbound",
        "external_number": CUSTOMER,
        "result": "missed",
    }
    assert (await as_admin.post(url, json=cdr, headers=auth)).json()["result"] == "ended"
    assert await Task.count().where(Task.client == client_id) == 1
    unknown = {"event": "call.ended", "call_id": "nobody-knows"}
    assert (await as_admin.post(url, json=unknown, headers=auth)).status_code == 422
    huge = await as_admin.post(url, content=b"{" + b" " * 70_000 + b"}", headers=auth)
    assert huge.status_code == 413


async def _calls(manager: dict[str, Any], admin: dict[str, Any]) -> dict[str, int]:
    """Max's client with a call, and Anna's client with a call Max must not see."""
    from core.services import clients
    from plugins.telephony.calls import CallStore

    mine = await clients.create_client(
        {"name": "Mine", "phones": CUSTOMER, "responsible": manager["id"]}, manager["id"]
    )
    theirs = await clients.create_client(
        {"name": "Theirs", "phones": "+74997654321", "responsible": admin["id"]}, admin["id"]
    )
    store = CallStore()
    await store.start(
        "hook:a", direction="inbound", number=CUSTOMER, ringing_users=(manager["id"],)
    )
    await store.answered("hook:a", user_id=manager["id"], extension="101")
    await store.end("hook:a", result="answered")
    await store.start("hook:b", direction="outbound", number="+74997654321", user_id=admin["id"])
    await store.end("hook:b", result="no_answer")
    return {"mine": mine, "theirs": theirs}


async def test_journal_and_card_tab_respect_visibility(
    client: Any, manager: dict[str, Any], admin: dict[str, Any]
) -> None:
    ids = await _calls(manager, admin)
    await login(client, "manager", "manager-password")
    journal = await client.get("/p/telephony/journal")
    assert journal.status_code == 200
    assert "Mine" in journal.text and "Theirs" not in journal.text
    tab = await client.get(f"/p/telephony/clients/{ids['mine']}/calls")
    assert tab.status_code == 200 and "Answered" in tab.text
    assert (await client.get(f"/p/telephony/clients/{ids['theirs']}/calls")).status_code == 404
    card = await client.get(f"/clients/{ids['mine']}")
    assert f'hx-get="/p/telephony/clients/{ids["mine"]}/calls"' in card.text
    assert "telephony-call" in card.text, "the call is on the client's timeline"
    filtered = await client.get("/p/telephony/journal?result=missed")
    assert "Mine" not in filtered.text
    await login(client, "admin", "admin-password")
    everything = await client.get("/p/telephony/journal?direction=outbound")
    assert "Theirs" in everything.text and "Mine" not in everything.text


async def test_recording_from_the_freepbx_folder_needs_the_permission(
    client: Any, manager: dict[str, Any], admin: dict[str, Any], tmp_path: Path
) -> None:
    from plugins.telephony.config import settings_row
    from plugins.telephony.tables import TelephonyCall, TelephonySettings

    await _calls(manager, admin)
    call = await TelephonyCall.select().where(TelephonyCall.call_key == "hook:a").first()
    await TelephonyCall.update({TelephonyCall.channel_ids: '["1781704172.3807879"]'}).where(
        TelephonyCall.id == call["id"]
    )
    day = call["started_at"]
    folder = tmp_path / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}"
    folder.mkdir(parents=True)
    name = f"in-74951234567-101-{day:%Y%m%d}-100000-1781704172.3807879.wav"
    (folder / name).write_bytes(b"RIFF-fake-audio")
    await settings_row()
    await TelephonySettings.update({TelephonySettings.recordings_folder: str(tmp_path)}).where(
        TelephonySettings.id == 1
    )
    url = f"/p/telephony/calls/{call['id']}/recording"
    await login(client, "manager", "manager-password")
    assert (await client.get(url)).status_code == 403, "managers cannot listen by default"
    await login(client, "admin", "admin-password")
    audio = await client.get(url)
    assert audio.status_code == 200 and audio.content == b"RIFF-fake-audio"
    await TelephonyCall.update({TelephonyCall.recording: "../../etc/passwd"}).where(
        TelephonyCall.id == call["id"]
    )
    assert (await client.get(url)).status_code == 404, "no escape from the folder"


async def test_originate_replays_the_captured_click_to_call(
    db: None, manager: dict[str, Any], pbx: ScriptedAmiServer
) -> None:
    from plugins.telephony.service import originate

    assert not (await originate(manager["id"], "84951234567")).ok, "no PBX yet"
    await configure(pbx.port, {"101": manager["id"]})
    pbx.originate_script = capture("pyfreepbx-originate.txt")
    result = await originate(manager["id"], "8 (495) 123-45-67")
    assert result.ok, result.message
    sent = next(a for a in pbx.actions if a.get("action") == "Originate")
    assert sent["channel"] == "PJSIP/101" and sent["exten"] == "84951234567"
    assert sent["async"] == "true" and sent["context"] == "from-internal"

    pbx.originate_script = b""
    pbx.originate_response = ("Failure", "3")
    result = await originate(manager["id"], "84951234567")
    assert not result.ok and "did not answer" in result.message
    pbx.extension_status = "2"
    assert "busy" in (await originate(manager["id"], "84951234567")).message
    pbx.extension_status = "4"
    assert "not connected" in (await originate(manager["id"], "84951234567")).message
    assert "No phone extension" in (await originate(99999, "84951234567")).message
    await pbx.stop()
    assert "cannot be reached" in (await originate(manager["id"], "84951234567")).message


async def test_kpi_metrics(manager: dict[str, Any], admin: dict[str, Any], runtime: Any) -> None:
    from core.hooktypes import MetricScope

    await _calls(manager, admin)
    metrics = {m.key: m for m in runtime.plugins.collect("kpi_metrics")}
    today = utcnow().date()
    period = (today - timedelta(days=1), today + timedelta(days=2))
    made = metrics["telephony.calls_made"].compute
    assert await made(*period, MetricScope()) == 1
    assert await made(*period, MetricScope(user_ids=(manager["id"],))) == 0
    assert await metrics["telephony.missed"].compute(*period, MetricScope()) == 0
    assert await metrics["telephony.talk_time"].compute(*period, MetricScope()) >= 0
    assert await made(date(2020, 1, 1), date(2020, 2, 1), MetricScope()) == 0


async def test_embedded_owner_runs_the_connection(runtime: Any, db: None) -> None:
    from core.jobs.services import BackgroundServices

    services = BackgroundServices(runtime)
    assert "telephony.ami" in [s.name for s in services.services]
    services.start()
    await asyncio.sleep(0.2)
    await services.stop()
    assert all(task.done() for task in services.tasks) or not services.tasks
