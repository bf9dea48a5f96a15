"""The core live channel (core/live.py, GET /live): a real server, real streams, and on
PostgreSQL real LISTEN/NOTIFY between connections and processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from typing import Any

import asyncpg
import pytest

from core import live
from core.settings import PROJECT_ROOT
from plugins.telephony.tests.live_support import (
    live_stream,
    logged_in,
    serving,
    wait_until,
)


@pytest.fixture
async def people(db: None) -> dict[str, dict[str, Any]]:
    from core.services import users

    return {
        name: await users.create_user(name, name.title(), f"{name}-password", role="manager")
        for name in ("ann", "bob")
    }


@pytest.fixture
async def base_url(app: Any, db: None) -> Any:
    async with serving(app) as url:
        yield url


def _is_postgres(runtime: Any) -> bool:
    return not runtime.settings.is_sqlite


async def test_publish_reaches_only_the_named_users(people: dict[str, Any]) -> None:
    ann, bob = people["ann"]["id"], people["bob"]["id"]
    async with live.subscribe(ann) as ann_tab, live.subscribe(bob) as bob_tab:
        assert live.hub().count(ann) == 1
        await live.publish([ann], "swap", "<p>for Ann</p>")
        message = await ann_tab.next(timeout=5)
        assert message == live.LiveMessage("swap", "<p>for Ann</p>")
        assert await bob_tab.next(timeout=0.3) is None, "Bob must not get Ann's message"
    assert live.hub().count() == 0, "leaving the block ends the subscription"


async def test_every_tab_of_a_user_gets_the_message(people: dict[str, Any]) -> None:
    ann = people["ann"]["id"]
    async with live.subscribe(ann) as first, live.subscribe(ann) as second:
        await live.publish([ann, 999_999], "notice", "<p>hi</p>")
        assert (await first.next(5)).html == "<p>hi</p>"  # type: ignore[union-attr]
        assert (await second.next(5)).html == "<p>hi</p>"  # type: ignore[union-attr]


async def test_large_message_arrives_whole(people: dict[str, Any]) -> None:
    """Over PostgreSQL's 8000-byte NOTIFY limit (Cyrillic: 2 bytes a letter)."""
    ann = people["ann"]["id"]
    html = "<ul>" + "".join(f"<li>Клиент №{i} «Ромашка»</li>" for i in range(900)) + "</ul>"
    assert len(html.encode()) > 3 * 8000
    async with live.subscribe(ann) as tab:
        await live.publish([ann], "swap", html)
        await live.publish([ann], "swap", "<p>small after large</p>")
        assert (await tab.next(5)).html == html  # type: ignore[union-attr]
        assert (await tab.next(5)).html == "<p>small after large</p>"  # type: ignore[union-attr]


def test_large_messages_are_split_under_the_notify_limit() -> None:
    html = "ж" * 20_000
    payloads = live.encode_notifications([1, 2], live.LiveMessage("swap", html))
    assert len(payloads) > 1
    assert all(len(p.encode()) < 8000 for p in payloads)
    joiner = live.Reassembler()
    results = [joiner.feed(p) for p in reversed(payloads)]  # order does not matter
    assert results[:-1] == [None] * (len(payloads) - 1)
    assert results[-1] == ([1, 2], live.LiveMessage("swap", html))


async def test_delivery_from_another_thread_and_loop(people: dict[str, Any], runtime: Any) -> None:
    """Embedded mode: the job worker publishes from its own thread and event loop."""
    ann = people["ann"]["id"]
    async with live.subscribe(ann) as tab:
        thread = threading.Thread(
            target=lambda: asyncio.run(live.publish([ann], "swap", "<p>from a job</p>"))
        )
        thread.start()
        await asyncio.get_running_loop().run_in_executor(None, thread.join)
        assert (await tab.next(5)).html == "<p>from a job</p>"  # type: ignore[union-attr]


async def test_sse_stream_over_http(base_url: str, people: dict[str, Any]) -> None:
    ann, bob = people["ann"]["id"], people["bob"]["id"]
    async with (
        logged_in(base_url, "ann", "ann-password") as ann_http,
        logged_in(base_url, "bob", "bob-password") as bob_http,
        live_stream(ann_http) as ann_tab,
        live_stream(bob_http) as bob_tab,
    ):
        await live.publish([ann], "swap", '<div id="x" hx-swap-oob="true">\nline two</div>')
        event = await ann_tab.next_data()
        assert event.event == "swap"
        assert event.data == '<div id="x" hx-swap-oob="true">\nline two</div>'
        await live.publish([bob], "other", "<p>Bob's</p>")
        event = await bob_tab.next_data()
        assert (event.event, event.data) == ("other", "<p>Bob's</p>")
        with pytest.raises(TimeoutError):
            await ann_tab.next_data(timeout=0.5)
    await wait_until(lambda: live.hub().count() == 0)


async def test_closed_tabs_leave_no_subscription(base_url: str, people: dict[str, Any]) -> None:
    ann = people["ann"]["id"]
    async with logged_in(base_url, "ann", "ann-password") as http:
        for _ in range(5):
            async with live_stream(http):
                assert live.hub().count(ann) >= 1
        await wait_until(lambda: live.hub().count(ann) == 0)


async def test_stream_needs_a_login(base_url: str, db: None) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.get("/live", headers={"accept": "text/event-stream"})
    assert response.status_code in (401, 302, 303)


async def test_heartbeat_and_logout_end_the_stream(
    base_url: str, people: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.tables import Session
    from core.web.controllers import live as live_controller

    monkeypatch.setattr(live_controller, "HEARTBEAT_SECONDS", 0.2)
    async with logged_in(base_url, "ann", "ann-password") as http, live_stream(http) as tab:
        assert (await tab.next(2)).comment == "ping"
        await Session.delete().where(Session.user == people["ann"]["id"])  # logged out
        with pytest.raises(EOFError):
            while True:
                await tab.next(2)
    await wait_until(lambda: live.hub().count() == 0)


async def test_stopping_server_ends_the_streams(base_url: str, people: dict[str, Any]) -> None:
    """What the stop signal triggers (core.live.end_streams_on_exit): the streams end
    normally at once, so the server need not wait for the tabs and browsers reconnect."""
    async with logged_in(base_url, "ann", "ann-password") as http, live_stream(http) as tab:
        live.hub().close_all()
        with pytest.raises(EOFError):
            await tab.next(2)
    await wait_until(lambda: live.hub().count() == 0)


async def test_stop_signal_ends_streams_then_reaches_the_server(people: dict[str, Any]) -> None:
    import signal

    received: list[int] = []
    original_int = signal.getsignal(signal.SIGINT)
    original = signal.signal(signal.SIGTERM, lambda number, _frame: received.append(number))
    try:
        live.end_streams_on_exit()
        live.end_streams_on_exit()  # a second app start-up does not wrap twice
        async with live.subscribe(people["ann"]["id"]) as tab:
            signal.raise_signal(signal.SIGTERM)
            assert await tab.next(2) is live.CLOSED
        assert received == [signal.SIGTERM], "the server's own handler still runs, once"
    finally:
        signal.signal(signal.SIGTERM, original)
        signal.signal(signal.SIGINT, original_int)


# --- PostgreSQL: across connections and processes -----------------------------------


async def test_another_process_publishes_to_this_one(runtime: Any, people: dict[str, Any]) -> None:
    """The PBX connection lives in the scheduler process; the tab in a web process."""
    if not _is_postgres(runtime):
        pytest.skip("the cross-process path is PostgreSQL's (KARTOTEKA_TEST_DATABASE_URL)")
    ann = people["ann"]["id"]
    script = textwrap.dedent(
        f"""
        import asyncio
        from core import live
        asyncio.run(live.publish([{ann}], "swap", "<p>from the scheduler process</p>"))
        """
    )
    env = {**os.environ, "DATABASE_URL": runtime.settings.database_url, "KARTOTEKA_PLUGINS": ""}
    async with live.subscribe(ann) as tab:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, cwd=PROJECT_ROOT, env=env, stderr=subprocess.PIPE
        )
        _out, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        message = await tab.next(5)
        assert message is not None and message.html == "<p>from the scheduler process</p>"


async def test_listener_survives_a_dropped_connection(runtime: Any, people: dict[str, Any]) -> None:
    """A PostgreSQL restart or network cut: the LISTEN connection comes back by itself."""
    if not _is_postgres(runtime):
        pytest.skip("PostgreSQL only")
    ann = people["ann"]["id"]
    dsn = runtime.settings.database_url
    async with live.subscribe(ann) as tab:
        admin = await asyncpg.connect(dsn)
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
            )
            assert killed >= 1
            received = None
            for _ in range(100):  # publish until the new listener hears it
                await admin.execute(
                    "SELECT pg_notify($1, $2)",
                    live.CHANNEL,
                    f'{{"u":[{ann}],"e":"swap","h":"<p>back</p>"}}',
                )
                received = await tab.next(0.1)
                if received is not None:
                    break
            assert received is not None and received.html == "<p>back</p>"
        finally:
            await admin.close()
