"""Screen pop and click-to-call in real browsers (headless Chromium), end to end:

scripted PBX (real AMI over TCP, replaying the Asterisk captures as a trunk call)
→ the AMI connection owned by a real server (``kartoteka run`` in embedded mode;
``kartoteka scheduler`` in server mode, with PostgreSQL and two web workers)
→ call tracker → popup.announce → core.live → GET /live (SSE) → htmx-ext-sse
→ the pop-up in the right manager's browser, and only there.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from plugins.telephony.tests.ami_server import ScriptedAmiServer, as_trunk_call, blocks, capture
from tests.test_e2e_browser import CHROMIUM, KARTOTEKA, _free_port, launch_chromium

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SETUP = """
import asyncio, sys

async def main(port: int) -> None:
    from core.db import bind_tables
    from core.sealed import seal
    from core.services import clients, deals, users
    from core.services.common import utcnow
    from core.services.roles import sync_roles
    from plugins.telephony.tables import TelephonyExtension, TelephonySettings

    bind_tables()
    await sync_roles()
    await deals.ensure_default_pipeline()
    ann = await users.create_user("ann", "Ann Manager", "ann-password", role="manager")
    bob = await users.create_user("bob", "Bob Manager", "bob-password", role="manager")
    client_id = await clients.create_client(
        {"name": "Romashka E2E", "phones": "8 (495) 123-45-67", "responsible": ann["id"]},
        ann["id"],
    )
    await deals.create_deal({"title": "Forklift lease", "client": client_id, "amount": "150000"}, ann["id"])
    await TelephonySettings.insert(TelephonySettings(
        id=1, ami_host="127.0.0.1", ami_port=port, ami_username="crm",
        ami_secret=seal("s3cret"), updated_at=utcnow(),
    ))
    await TelephonyExtension.insert(
        TelephonyExtension(extension="7002", user=ann["id"]),
        TelephonyExtension(extension="7004", user=bob["id"]),
    )
    print(client_id)

asyncio.run(main(int(sys.argv[1])))
"""


class ThreadedPbx:
    """The scripted AMI server on an event loop of its own (the browser API is synchronous)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: ScriptedAmiServer = self.run(ScriptedAmiServer().start())

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(15)

    def send(self, data: bytes) -> None:
        self.run(self.server.send(data))

    def wait_login(self) -> None:
        self.run(self.server.wait_login(1, timeout=20))

    def close(self) -> None:
        self.run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _server_mode_env() -> dict[str, str]:
    """Server mode needs PostgreSQL: a database of its own next to the test database."""
    test_url = os.environ.get("KARTOTEKA_TEST_DATABASE_URL", "")
    if not test_url.startswith("postgres"):
        pytest.skip("server mode runs with KARTOTEKA_TEST_DATABASE_URL (PostgreSQL)")
    base, name = test_url.rsplit("/", 1)
    url = f"{base}/{name.split('?', 1)[0]}_e2e"

    async def fresh() -> None:
        try:
            conn = await asyncpg.connect(url)
        except asyncpg.InvalidCatalogNameError:
            admin = await asyncpg.connect(test_url)
            try:
                await admin.execute(f'CREATE DATABASE "{url.rsplit("/", 1)[1]}"')
            finally:
                await admin.close()
            conn = await asyncpg.connect(url)
        try:
            await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        finally:
            await conn.close()

    asyncio.run(fresh())
    return {
        "DATABASE_URL": url,
        "BROKER_URL": os.environ.get("KARTOTEKA_TEST_BROKER_URL") or "redis://127.0.0.1:6379/14",
        "KARTOTEKA_WEB_WORKERS": "2",
    }


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    process.kill()
    pytest.fail("server did not start: " + log.read_text())


@pytest.fixture(scope="module", params=["embedded", "server"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """embedded: one `kartoteka run` owns the PBX connection and serves the browsers.
    server: `kartoteka scheduler` owns it, two web workers serve the browsers, and
    every pop-up crosses processes through PostgreSQL LISTEN/NOTIFY."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: `make test` installs it (scripts/system-deps.sh)")
    data_dir = tmp_path_factory.mktemp(f"e2e-telephony-{request.param}")
    env = {
        **os.environ,
        "KARTOTEKA_DATA_DIR": str(data_dir),
        "KARTOTEKA_LOCALE": "en",
        "KARTOTEKA_PLUGINS": "telephony",
        "DATABASE_URL": "",
        "BROKER_URL": "",
    }
    if request.param == "server":
        env.update(_server_mode_env())
    pbx = ThreadedPbx()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run([KARTOTEKA, "migrate"], env=env, check=True, capture_output=True)
        setup = subprocess.run(
            [sys.executable, "-c", SETUP, str(pbx.server.port)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parents[3],
        )
        client_id = int(setup.stdout.strip().splitlines()[-1])
        port = _free_port()
        log = data_dir / "server.log"
        with log.open("w") as out:
            processes.append(
                subprocess.Popen(
                    [KARTOTEKA, "run", "--port", str(port)],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
            if request.param == "server":
                processes.append(
                    subprocess.Popen(
                        [KARTOTEKA, "scheduler"], env=env, stdout=out, stderr=subprocess.STDOUT
                    )
                )
        _wait_for_port(port, processes[0], log)
        pbx.wait_login()  # the owner's AMI connection is up
        yield {"url": f"http://127.0.0.1:{port}", "client_id": client_id, "pbx": pbx}
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=20)
        pbx.close()


@pytest.fixture
def browser(server: dict[str, Any], tmp_path: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            yield chromium
        except Exception:
            for index, context in enumerate(chromium.contexts):
                for page in context.pages:
                    page.screenshot(path=str(tmp_path / f"failure-{index}.png"))
            raise
        finally:
            chromium.close()


def _logged_in(browser: Any, server: dict[str, Any], username: str) -> Any:
    from playwright.sync_api import expect

    page = browser.new_context(base_url=server["url"]).new_page()
    page.set_default_timeout(10_000)
    page.goto("/login")
    page.fill("#username", username)
    page.fill("#password", f"{username}-password")
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.locator("body[data-live=connected]")).to_have_count(1)
    return page


def _stages(data: bytes) -> tuple[bytes, bytes, bytes]:
    """The call up to the answer, the answer, and the hang-up.

    The capture rings one phone (7002); a ring group would dial several: a copy of its
    DialBegin towards 7004 makes Bob's phone ring too, until Ann answers.
    """
    parts = blocks(data)
    dial = next(b for b in parts if b.startswith(b"Event: DialBegin\r\n"))
    also_bob = (
        dial.replace(b"DestChannel: PJSIP/7002-", b"DestChannel: PJSIP/7004-")
        .replace(b"DestCallerIDNum: 7002", b"DestCallerIDNum: 7004")
        .replace(b"DestUniqueid: 1781704172.3807879", b"DestUniqueid: 1781704172.3807899")
    )
    answer = next(i for i, b in enumerate(parts) if b"DialStatus: ANSWER" in b)
    hangup = next(i for i, b in enumerate(parts) if b.startswith(b"Event: Hangup\r\n"))
    ringing = b"".join(parts[:answer]) + also_bob
    return ringing, b"".join(parts[answer:hangup]), b"".join(parts[hangup:])


def test_screen_pop_reaches_the_ringing_manager_only(browser: Any, server: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    pbx: ThreadedPbx = server["pbx"]
    ann, bob = _logged_in(browser, server, "ann"), _logged_in(browser, server, "bob")
    ringing, answer, hangup = _stages(
        as_trunk_call(capture("pyfreepbx-answered.txt"), "7001", "84951234567")
    )
    pbx.send(ringing)  # Ann's 7002 and Bob's 7004 ring; the caller is Ann's client
    popup = ann.locator("#live-popups section.popup")
    expect(popup).to_have_count(1)
    expect(popup).to_have_attribute("data-call-state", "ringing")
    expect(popup).to_contain_text("Incoming call")
    expect(popup).to_contain_text("Romashka E2E")
    expect(popup).to_contain_text("Forklift lease")
    expect(popup.locator("a.popup-client")).to_have_attribute(
        "href", f"/clients/{server['client_id']}"
    )
    bobs = bob.locator("#live-popups section.popup")
    expect(bobs).to_contain_text("A colleague's client")  # Bob may not see Ann's client
    expect(bobs).not_to_contain_text("Romashka")
    expect(bobs).not_to_contain_text("Forklift")

    pbx.send(answer)  # Ann picks up: gone from Bob's screen, updated on Ann's
    expect(bobs).to_have_count(0)
    expect(popup).to_have_attribute("data-call-state", "answered")
    expect(popup).to_contain_text("You answered")
    expect(ann.locator("#live-popups section.popup")).to_have_count(1), "updated in place"

    pbx.send(hangup)
    expect(popup).to_contain_text("Call ended")
    expect(ann.locator("#live-popups section.popup")).to_have_count(0, timeout=12_000)
    expect(bob.locator("#live-popups section.popup")).to_have_count(0)

    # An unknown number rings Bob's 7004 and nobody answers.
    pbx.send(as_trunk_call(capture("pyfreepbx-missed.txt"), "7003", "84997654321"))
    missed = bob.locator("#live-popups section.popup")
    expect(missed).to_contain_text("Unknown number")
    expect(missed).to_contain_text("Missed call")
    expect(ann.locator("#live-popups section.popup")).to_have_count(0)
    missed.locator("a.popup-new-client").click()
    expect(bob).to_have_url(re.compile(r"/clients/new\?phone="))
    expect(bob.locator("#f-phones")).to_have_value("+74997654321")


def test_click_to_call_rings_my_phone_and_says_so(browser: Any, server: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    pbx: ThreadedPbx = server["pbx"]
    ann = _logged_in(browser, server, "ann")
    ann.goto(f"/clients/{server['client_id']}")
    pbx.server.originate_response = ("Success", "4")
    ann.locator("button[data-phone-action='telephony.call']").first.click()
    feedback = ann.locator(".phone-feedback [data-call-result]").first
    expect(feedback).to_have_text("Your phone answered; dialling the number.")
    originate = [a for a in pbx.server.actions if a.get("action", "").lower() == "originate"]
    assert originate and originate[-1]["channel"] == "PJSIP/7002"
    assert originate[-1]["exten"] == "+74951234567"

    pbx.server.extension_status = "1"  # Ann is on another call
    ann.locator("button[data-phone-action='telephony.call']").first.click()
    expect(feedback).to_have_text("Your phone 7002 is busy.")
