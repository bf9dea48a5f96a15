"""A scripted Asterisk Manager Interface server on a real TCP socket, for tests.

It greets with a banner, checks the login, answers the actions the CRM sends
(Ping, CoreShowChannels, ExtensionState, CoreSettings, Originate, Logoff) the way
Asterisk 16 does, and lets a test push raw bytes (the saved captures) to every
logged-in client or cut the connection. Its own parsing is deliberately naive
(split on blank lines) so it does not share bugs with the client under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path
from typing import Any

SAMPLES = Path("/work/shared/samples/ami")
FIXTURES = Path(__file__).parent / "fixtures"
BANNER = b"Asterisk Call Manager/5.0.5\r\n"


def capture(name: str) -> bytes:
    """A saved capture, byte for byte (CRLF), from the shared samples or our fixtures."""
    for folder in (FIXTURES, SAMPLES):
        path = folder / name
        if path.exists():
            return path.read_bytes()
    raise FileNotFoundError(name)


def as_trunk_call(data: bytes, caller: str, number: str, linkedid_suffix: str = "") -> bytes:
    """Turn an internal capture into an inbound trunk call from ``number``.

    The caller's channel becomes ``PJSIP/provider-...`` in context ``from-pstn`` and
    its caller id the external number: the shape protocols.md B.4 derives for a trunk
    call. ``linkedid_suffix`` makes a second, distinct call from the same capture.
    """
    text = data.decode()
    text = text.replace(f"PJSIP/{caller}-", "PJSIP/provider-")
    text = re.sub(
        rf"(Channel: PJSIP/provider-[^\r]*\r\n(?:[^\r]+\r\n)*?)CallerIDNum: {caller}\r\n",
        rf"\g<1>CallerIDNum: {number}\r\n",
        text,
    )
    text = text.replace(f"ConnectedLineNum: {caller}\r\n", f"ConnectedLineNum: {number}\r\n")
    text = re.sub(
        r"(Channel: PJSIP/provider-[^\r]*\r\n(?:[^\r]+\r\n)*?)Context: from-internal\r\n",
        r"\g<1>Context: from-pstn\r\n",
        text,
        count=1,
    )
    if linkedid_suffix:
        text = re.sub(r"(\d{10}\.\d+)", rf"\g<1>{linkedid_suffix}", text)
    return text.encode()


def blocks(data: bytes) -> list[bytes]:
    return [b + b"\r\n\r\n" for b in data.split(b"\r\n\r\n") if b.strip()]


class ScriptedAmiServer:
    def __init__(self, username: str = "crm", secret: str = "s3cret") -> None:
        self.username, self.secret = username, secret
        self.server: asyncio.Server | None = None
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.actions: list[dict[str, str]] = []
        self.logins = 0
        self.active_channels: list[dict[str, str]] = []
        """What CoreShowChannels reports (Linkedid, Uniqueid, Channel)."""
        self.extension_status = "0"
        self.originate_script: bytes = b""
        """A captured Originate transcript to replay instead of a made-up answer."""
        self.originate_response = ("Success", "4")
        self.logged_in = asyncio.Event()

    async def start(self) -> ScriptedAmiServer:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        await self.drop_clients()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def drop_clients(self) -> None:
        """Cut every connection, like a PBX restart or a network loss."""
        writers, self.writers = self.writers, []
        self.logged_in.clear()
        for writer in writers:
            with contextlib.suppress(Exception):
                writer.transport.abort()

    async def send(self, data: bytes, chunk: int = 0) -> None:
        """Push raw bytes to every logged-in client (optionally in small pieces)."""
        for writer in list(self.writers):
            if chunk:
                for start in range(0, len(data), chunk):
                    writer.write(data[start : start + chunk])
                    await writer.drain()
            else:
                writer.write(data)
                await writer.drain()

    async def wait_login(self, count: int = 1, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while self.logins < count or not self.writers:
                await asyncio.sleep(0.01)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(BANNER)
        buffer = b""
        authed = False
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                buffer += data
                while b"\r\n\r\n" in buffer:
                    raw, buffer = buffer.split(b"\r\n\r\n", 1)
                    action = {}
                    for line in raw.decode().split("\r\n"):
                        key, _, value = line.partition(": ")
                        action[key.lower()] = value
                    self.actions.append(action)
                    authed = await self._answer(action, writer, authed)
                    if authed is None:
                        return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            if writer in self.writers:
                self.writers.remove(writer)
            writer.close()

    async def _answer(
        self, action: dict[str, str], writer: asyncio.StreamWriter, authed: bool
    ) -> Any:
        name = action.get("action", "").lower()
        action_id = action.get("actionid", "")

        def reply(*lines: str) -> None:
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())

        if name == "login":
            if action.get("username") == self.username and action.get("secret") == self.secret:
                reply(
                    "Response: Success",
                    f"ActionID: {action_id}",
                    "Message: Authentication accepted",
                )
                reply("Event: FullyBooted", "Privilege: system,all", "Status: Fully Booted")
                self.logins += 1
                self.writers.append(writer)
                self.logged_in.set()
                return True
            reply("Response: Error", f"ActionID: {action_id}", "Message: Authentication failed")
            await writer.drain()
            return None
        if not authed:
            reply("Response: Error", f"ActionID: {action_id}", "Message: Permission denied")
            return authed
        if name == "logoff":
            reply(
                "Response: Goodbye", f"ActionID: {action_id}", "Message: Thanks for all the fish."
            )
            await writer.drain()
            return None
        if name == "ping":
            reply(
                "Response: Success",
                f"ActionID: {action_id}",
                "Ping: Pong",
                "Timestamp: 1781704172.000000",
            )
        elif name == "coresettings":
            reply(
                "Response: Success",
                f"ActionID: {action_id}",
                "AMIversion: 5.0.5",
                "AsteriskVersion: 16.30.0",
            )
        elif name == "extensionstate":
            reply(
                "Response: Success",
                f"ActionID: {action_id}",
                "Message: Extension Status",
                f"Exten: {action.get('exten')}",
                f"Context: {action.get('context')}",
                "Hint: PJSIP/" + action.get("exten", ""),
                f"Status: {self.extension_status}",
            )
        elif name == "coreshowchannels":
            reply(
                "Response: Success",
                f"ActionID: {action_id}",
                "EventList: start",
                "Message: Channels will follow",
            )
            for channel in self.active_channels:
                reply(
                    "Event: CoreShowChannel",
                    f"ActionID: {action_id}",
                    *(f"{k}: {v}" for k, v in channel.items()),
                )
            reply(
                "Event: CoreShowChannelsComplete",
                f"ActionID: {action_id}",
                "EventList: Complete",
                f"ListItems: {len(self.active_channels)}",
            )
        elif name == "originate":
            reply(
                "Response: Success",
                f"ActionID: {action_id}",
                "Message: Originate successfully queued",
            )
            if self.originate_script:  # a capture: its events, with this action's id
                events = self.originate_script.split(b"\r\n\r\n", 1)[1]
                writer.write(events.replace(b"OPS494-ORIG-A", action_id.encode()))
                await writer.drain()
                return authed
            response, reason = self.originate_response
            reply(
                "Event: OriginateResponse",
                "Privilege: call,all",
                f"ActionID: {action_id}",
                f"Response: {response}",
                f"Channel: {action.get('channel')}",
                f"Context: {action.get('context')}",
                f"Exten: {action.get('exten')}",
                f"Reason: {reason}",
                "Uniqueid: 1781704200.100",
                "CallerIDNum: <unknown>",
                "CallerIDName: <unknown>",
            )
        else:
            reply("Response: Error", f"ActionID: {action_id}", "Message: Invalid/unknown command")
        await writer.drain()
        return authed


class ServerThread:
    """The scripted server on an event loop of its own thread.

    Needed where the test's loop blocks: Litestar's test client runs each request to
    completion through a blocking portal, so a server on the test loop would freeze.
    """

    def __init__(self) -> None:
        import threading

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: ScriptedAmiServer = asyncio.run_coroutine_threadsafe(
            ScriptedAmiServer().start(), self.loop
        ).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
