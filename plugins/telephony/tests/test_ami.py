"""The AMI wire format and client, against a scripted server over real TCP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from plugins.telephony.ami.client import AmiAuthError, AmiClient, AmiCredentials, AmiError
from plugins.telephony.ami.protocol import AmiParser, encode_action
from plugins.telephony.tests.ami_server import ScriptedAmiServer, blocks, capture


@pytest.fixture
async def pbx() -> AsyncIterator[ScriptedAmiServer]:
    server = await ScriptedAmiServer().start()
    yield server
    await server.stop()


def creds(server: ScriptedAmiServer, secret: str = "s3cret") -> AmiCredentials:
    return AmiCredentials("127.0.0.1", server.port, "crm", secret)


async def collect(ami: AmiClient, count: int, timeout: float = 10) -> list:
    found = []
    async with asyncio.timeout(timeout):
        async for event in ami.events():
            found.append(event)
            if len(found) == count:
                return found
    return found


def test_parser_reads_a_capture_in_any_chunking() -> None:
    data = b"Asterisk Call Manager/5.0.5\r\n" + capture("pyfreepbx-answered.txt")
    whole = AmiParser().feed(data)
    parser = AmiParser()
    pieces = []
    for start in range(0, len(data), 7):  # split inside CRLFs and keys
        pieces += parser.feed(data[start : start + 7])
    assert [m.pairs for m in pieces] == [m.pairs for m in whole]
    assert parser.version == "5.0.5"
    assert len(whole) == len(blocks(capture("pyfreepbx-answered.txt")))
    first = whole[0]
    assert first.event == "Newchannel" and first.get("AccountCode") == ""
    assert first.get("linkedid") == "1781704172.3807878", "keys are case-insensitive"
    assert [m.get("DialStatus") for m in whole if m.event == "DialEnd"] == ["ANSWER"]


def test_parser_reads_response_follows_and_repeated_keys() -> None:
    parser = AmiParser()
    (message,) = parser.feed(
        b"Response: Follows\r\nPrivilege: Command\r\nActionID: 7\r\n"
        b"Asterisk 11.11.0 built by root\r\nsecond: line\r\n\r\nafter blank\r\n--END COMMAND--\r\n\r\n"
    )
    assert message.response == "Follows" and message.action_id == "7"
    assert message.get_all("Output") == [
        "Asterisk 11.11.0 built by root",
        "second: line",
        "",
        "after blank",
    ]
    (event,) = parser.feed(b"Event: VarSet\r\nVariable: A=1\r\nVariable: B=2\r\n\r\n")
    assert event.get_all("variable") == ["A=1", "B=2"]


def test_parser_survives_garbage_and_huge_lines() -> None:
    parser = AmiParser(max_line_bytes=1024)
    messages = parser.feed(b"\x00\xff\xfe garbage without colon\r\n\r\n")
    messages += parser.feed(b"Event: Big\r\nValue: " + b"x" * 5000)
    messages += parser.feed(b"y" * 5000 + b"\r\n\r\nEvent: After\r\nKey: \xc3\xa9\xff\r\n\r\n")
    assert [m.event for m in messages] == ["After"]
    assert messages[0].get("Key") == "é\ufffd"
    assert parser.dropped_blocks == 2


def test_action_values_cannot_inject_headers() -> None:
    raw = encode_action("Originate", [("CallerID", "x\r\nAction: Command")])
    assert raw.count(b"\r\n") == 3 and b"\r\nAction: Command" not in raw


async def test_login_ok_and_failed(pbx: ScriptedAmiServer) -> None:
    async with AmiClient(creds(pbx)) as ami:
        assert ami.version == "5.0.5"
        assert (await ami.send_action("Ping")).get("Ping") == "Pong"
    with pytest.raises(AmiAuthError):
        await AmiClient(creds(pbx, "wrong")).connect()
    with pytest.raises(AmiError, match="cannot connect"):
        await AmiClient(AmiCredentials("127.0.0.1", 1, "crm", "x"), connect_timeout=2).connect()


async def test_replies_are_matched_by_action_id_between_events(pbx: ScriptedAmiServer) -> None:
    async with AmiClient(creds(pbx)) as ami:
        await pbx.wait_login()
        replies = await asyncio.gather(
            ami.send_action("CoreSettings"),
            pbx.send(capture("pyfreepbx-missed.txt"), chunk=100),
            ami.send_action("Ping"),
        )
        assert replies[0].get("AsteriskVersion") == "16.30.0"
        assert replies[2].get("Ping") == "Pong"
        events = await collect(ami, 1 + len(blocks(capture("pyfreepbx-missed.txt"))))
        assert events[0].event == "FullyBooted"
        assert events[-1].event == "Hangup"


async def test_hostile_input_does_not_end_the_session(pbx: ScriptedAmiServer) -> None:
    async with AmiClient(creds(pbx)) as ami:
        await pbx.wait_login()
        await pbx.send(b"\x00\x01\xff\xfe\r\n\r\n")
        await pbx.send(b"Event: Flood\r\nData: " + b"A" * (10 * 1024 * 1024) + b"\r\n\r\n")
        await pbx.send(b"Event: SomethingNew\r\nLinkedid: 1\r\n\r\n")
        storm = b"".join(
            f"Event: VarSet\r\nChannel: PJSIP/1-{i}\r\nVariable: X\r\nValue: {i}\r\n\r\n".encode()
            for i in range(20_000)
        )
        sender = asyncio.create_task(pbx.send(storm))
        events = await collect(ami, 2 + 20_000, timeout=60)
        await sender
        assert [e.event for e in events[:2]] == ["FullyBooted", "SomethingNew"]
        assert events[-1].get("Value") == "19999"
        assert ami.parser.dropped_blocks == 2
        assert (await ami.send_action("Ping")).get("Ping") == "Pong", "still talking"


async def test_list_actions_collect_their_events(pbx: ScriptedAmiServer) -> None:
    pbx.active_channels = [{"Channel": "PJSIP/7001-1", "Uniqueid": "1.1", "Linkedid": "1.1"}]
    async with AmiClient(creds(pbx)) as ami:
        items = await ami.send_list_action("CoreShowChannels")
    assert [i.get("Linkedid") for i in items] == ["1.1"]


async def test_a_dropped_connection_ends_the_event_stream(pbx: ScriptedAmiServer) -> None:
    async with AmiClient(creds(pbx)) as ami:
        await pbx.wait_login()
        await pbx.drop_clients()
        with pytest.raises(AmiError):
            await collect(ami, 10)
        with pytest.raises(AmiError):
            await ami.send_action("Ping")


async def test_a_silent_pbx_is_detected_by_keepalive(pbx: ScriptedAmiServer) -> None:
    ami = AmiClient(creds(pbx), keepalive=0.3, action_timeout=0.3)
    await ami.connect()
    try:
        pbx.server.close()  # type: ignore[union-attr]
        for writer in pbx.writers:  # stop answering but keep the socket open
            writer.transport.pause_reading()
        reason = await asyncio.wait_for(ami.wait_closed(), 5)
        assert "stopped answering" in reason
    finally:
        await ami.close()
