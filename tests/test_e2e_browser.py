"""The whole working day of a manager in a real browser (Debian's chromium, headless)
against a real server process on the embedded database."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def launch_chromium(playwright: Any) -> Any:
    """Debian's headless Chromium, quiet: no sandbox (root in CI), no background traffic."""
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    )


KARTOTEKA = str(Path(sys.executable).with_name("kartoteka"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: `make test` installs it (scripts/system-deps.sh)")
    data_dir = tmp_path_factory.mktemp("e2e-data")
    port = _free_port()
    env = {
        **os.environ,
        "KARTOTEKA_DATA_DIR": str(data_dir),
        "KARTOTEKA_LOCALE": "en",
        "KARTOTEKA_PLUGINS": "",
        "DATABASE_URL": "",
        "BROKER_URL": "",
    }
    subprocess.run([KARTOTEKA, "migrate"], env=env, check=True, capture_output=True)
    subprocess.run(
        [
            KARTOTEKA,
            "users",
            "create",
            "e2e",
            "--name",
            "Elena Manager",
            "--password",
            "e2e-password",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    log = (data_dir / "server.log").open("w")
    process = subprocess.Popen(
        [KARTOTEKA, "run", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("server did not start: " + (data_dir / "server.log").read_text())
    yield url
    process.terminate()
    process.wait(timeout=15)


@pytest.fixture
def page(server: str, tmp_path: Path) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        context = browser.new_context(base_url=server)
        page = context.new_page()
        page.set_default_timeout(10_000)
        try:
            yield page
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"))
            raise
        finally:
            browser.close()


def _log_in(page: Any) -> None:
    from playwright.sync_api import expect

    page.goto("/login")
    page.fill("#username", "e2e")
    page.fill("#password", "e2e-password")
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/$"))


def _new_client(page: Any, name: str, phone: str = "") -> None:
    from playwright.sync_api import expect

    page.goto("/clients/new")
    page.fill("#f-name", name)
    if phone:
        page.fill("#f-phones", phone)
    page.click("#client-form button[type=submit]")
    expect(page).to_have_url(re.compile(r"/clients/\d+$"))


def test_manager_day(page: object) -> None:
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    _log_in(page)

    # create a client with a phone as people type it
    _new_client(page, "ООО «Ромашка E2E»", phone="8 (912) 345-67-89")
    expect(page.locator("h1")).to_contain_text("Ромашка E2E")

    # find it by the bare digits, search as you type
    page.goto("/clients")
    page.fill("#q", "9123456789")
    result = page.locator("#client-rows a", has_text="Ромашка E2E")
    expect(result).to_have_count(1)
    expect(page.locator("#client-rows tr")).to_have_count(1)
    result.click()
    expect(page).to_have_url(re.compile(r"/clients/\d+$"))
    client_url = page.url

    # a deal from the card, moved to the next stage
    page.click("text=New deal")
    page.fill("#f-title", "E2E deal")
    page.fill("#f-amount", "150000")
    page.click("main form button:has-text('Save')")
    expect(page).to_have_url(re.compile(r"/deals/\d+$"))
    page.locator("#deal-stage button", has_text="Qualified").click()
    expect(page.locator("#deal-stage h3")).to_contain_text("Qualified")

    # a task from the card, then done
    page.goto(client_url)
    page.click("#client-tasks >> text=New task")
    page.fill("#f-title", "Call back about the offer")
    due = (datetime.now() + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    page.fill("#f-due_at", due)
    page.click("main form button:has-text('Save')")
    expect(page).to_have_url(client_url)
    expect(page.locator("#client-tasks")).to_contain_text("Call back about the offer")
    page.locator("#client-tasks button[aria-label='Mark done']").first.click()
    expect(page.locator("#client-tasks")).not_to_contain_text("Call back about the offer")

    # the timeline tells the whole story, newest first
    page.reload()
    timeline = page.locator("#client-timeline")
    for text in ("Client created", "E2E deal", "Qualified", "Call back about the offer"):
        expect(timeline).to_contain_text(text)
    expect(timeline.locator("li.entry").first).to_have_class(re.compile("entry-task-completed"))


def test_board_moves_swap_only_the_changed_columns(page: object) -> None:
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    _log_in(page)
    _new_client(page, "ООО «Канбан»")
    page.click("text=New deal")
    page.fill("#f-title", "Board deal")
    page.click("main form button:has-text('Save')")
    expect(page).to_have_url(re.compile(r"/deals/\d+$"))
    deal = f"#deal-{page.url.rsplit('/', 1)[1]}"

    page.set_viewport_size({"width": 1600, "height": 900})  # all six columns in view
    page.goto("/deals")

    def column_of(stage: str) -> Any:
        return page.locator(".column", has=page.locator("h3", has_text=stage))

    expect(column_of("New").locator(deal)).to_have_count(1)
    # A mark on a column the move does not touch: it survives only if the board is not
    # re-rendered as a whole.
    page.evaluate("document.querySelectorAll('.column')[4].dataset.mark = 'kept'")
    page.locator(f"{deal} button").click()  # "→": to the next stage
    expect(column_of("Qualified").locator(deal)).to_have_count(1)
    expect(column_of("New").locator(deal)).to_have_count(0)
    page.drag_and_drop(deal, ".column:has(h3:has-text('Proposal'))")
    expect(column_of("Proposal").locator(deal)).to_have_count(1)
    expect(column_of("Qualified").locator(deal)).to_have_count(0)
    expect(page.locator(".column[data-mark=kept]")).to_have_count(1)
    # Dropped on "Lost": the board asks why, in place; the answer moves the deal.
    page.drag_and_drop(deal, ".column:has(h3:has-text('Lost'))")
    page.fill("#f-lost_reason", "Chose a competitor")
    page.click("#board-notice button[type=submit]")
    expect(column_of("Lost").locator(deal)).to_have_count(1)
    expect(page.locator("#board-notice form")).to_have_count(0)
