"""Screen-pop latency: AMI event in → pop-up event out of the browser's SSE stream.

A scripted PBX (real AMI over TCP) rings N managers at once, each on their own
extension, from N different outside numbers (half of them known clients); each
manager has a live stream open (``GET /live``, as the browser's EventSource). We
time from writing the calls' events to the AMI socket until each manager's stream
delivers that call's pop-up, over several rounds, and report p50/p95/max.

Modes:

- ``embedded``: SQLite, one ``kartoteka run`` process owning the AMI connection and
  serving the streams (in-memory fan-out).
- ``server``: PostgreSQL + a broker; the AMI connection lives in the
  ``kartoteka scheduler`` process, the streams in two web worker processes, so every
  pop-up crosses processes through LISTEN/NOTIFY.

    make bench-telephony BENCH_ARGS="--mode server --calls 50 --rounds 10"
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.server import ROOT, Server, ensure_database, free_port, migrate, production_env
from plugins.telephony.tests.ami_server import ScriptedAmiServer, as_trunk_call, blocks, capture

PASSWORD = "bench-password"
FIRST_EXTENSION = 7100
CALLEE = "7004"
"""The extension that rings in the missed-call capture; each call gets its own instead."""

SETUP = """
import asyncio, sys

async def main(port: int, count: int, first_extension: int, password: str) -> None:
    from core.db import bind_tables
    from core.sealed import seal
    from core.services import clients, users
    from core.services.common import utcnow
    from core.services.roles import sync_roles
    from plugins.telephony.tables import TelephonyExtension, TelephonySettings

    bind_tables()
    await sync_roles()
    await TelephonySettings.insert(TelephonySettings(
        id=1, ami_host="127.0.0.1", ami_port=port, ami_username="crm",
        ami_secret=seal("s3cret"), updated_at=utcnow(),
    ))
    for i in range(count):
        user = await users.create_user(f"m{i}", f"Manager {i}", password, role="manager")
        await TelephonyExtension.insert(
            TelephonyExtension(extension=str(first_extension + i), user=user["id"])
        )
        if i % 2 == 0:  # every other caller is a known client
            await clients.create_client(
                {"name": f"Client {i}", "phones": f"+7 495 700-{i:04d}", "responsible": user["id"]},
                user["id"],
            )

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
"""


def caller_number(index: int) -> str:
    return f"+7495700{index:04d}"


def call_events(index: int, round_no: int) -> tuple[str, bytes, bytes]:
    """(Linkedid, events until its extension rings (DialBegin), the rest) of one call."""
    data = as_trunk_call(
        capture("pyfreepbx-missed.txt"),
        "7003",
        caller_number(index),
        linkedid_suffix=f"{round_no:02d}{index:03d}",
    )
    data = re.sub(rb"\b" + CALLEE.encode() + rb"\b", str(FIRST_EXTENSION + index).encode(), data)
    linkedid = re.search(rb"Linkedid: (\S+)", data).group(1).decode()  # type: ignore[union-attr]
    parts = blocks(data)
    ring = next(i for i, b in enumerate(parts) if b.startswith(b"Event: DialBegin\r\n")) + 1
    return linkedid, b"".join(parts[:ring]), b"".join(parts[ring:])


def popup_id(linkedid: str) -> str:
    return "call-" + re.sub(r"[^A-Za-z0-9_-]", "-", linkedid)


class Tab:
    """One manager's live stream, noting when each call's ringing pop-up arrives."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.arrived: dict[str, float] = {}
        self.connected = asyncio.Event()

    async def read(self) -> None:
        async with self.http.stream("GET", "/live", timeout=None) as response:
            response.raise_for_status()
            data: list[str] = []
            async for line in response.aiter_lines():
                if line.startswith(": connected"):
                    self.connected.set()
                elif line.startswith("data: "):
                    data.append(line[6:])
                elif not line and data:  # the end of one event
                    self._note("\n".join(data))
                    data = []

    def _note(self, html: str) -> None:
        found = re.search(r'id="(call-[^"]+)"', html)
        if found and 'data-call-state="ringing"' in html and found.group(1) not in self.arrived:
            self.arrived[found.group(1)] = time.perf_counter()


async def login(base_url: str, index: int) -> httpx.AsyncClient:
    http = httpx.AsyncClient(base_url=base_url, timeout=30)
    await http.get("/login")
    response = await http.post(
        "/login",
        data={
            "username": f"m{index}",
            "password": PASSWORD,
            "_csrf_token": http.cookies.get("csrftoken", ""),
        },
    )
    if response.status_code not in (200, 303):
        raise RuntimeError(f"login of m{index} failed: {response.status_code}")
    return http


async def measure(base_url: str, pbx: ScriptedAmiServer, calls: int, rounds: int) -> list[float]:
    clients, tabs, readers = [], [], []
    for i in range(calls):  # each tab opens its stream right after its login, as a browser
        clients.append(await login(base_url, i))
        tabs.append(Tab(clients[-1]))
        readers.append(asyncio.create_task(tabs[-1].read()))
    await asyncio.wait_for(asyncio.gather(*(t.connected.wait() for t in tabs)), 60)
    latencies: list[float] = []
    try:
        for round_no in range(rounds + 1):  # round 0 warms up caches and connections
            events = [call_events(i, round_no) for i in range(calls)]
            sent = time.perf_counter()
            await pbx.send(b"".join(ring for _id, ring, _rest in events))
            deadline = sent + 30
            while time.perf_counter() < deadline:
                if all(
                    popup_id(lid) in tab.arrived
                    for (lid, _r, _e), tab in zip(events, tabs, strict=True)
                ):
                    break
                await asyncio.sleep(0.005)
            missing = [
                i for i, (lid, _r, _e) in enumerate(events) if popup_id(lid) not in tabs[i].arrived
            ]
            if missing:
                raise RuntimeError(f"round {round_no}: no pop-up for calls {missing[:10]}")
            if round_no:
                latencies += [
                    tabs[i].arrived[popup_id(lid)] - sent for i, (lid, _r, _e) in enumerate(events)
                ]
            await pbx.send(b"".join(rest for _id, _ring, rest in events))
            await asyncio.sleep(1.0)  # let the calls end (missed-call tasks) before the next round
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for http in clients:
            await http.aclose()
    return latencies


class Scheduler:
    """`python -m core scheduler`: the process owning the AMI connection in server mode."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "core", "scheduler"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    pbx = await ScriptedAmiServer().start()
    work = Path(tempfile.mkdtemp(prefix="bench-telephony-"))
    if args.mode == "embedded":
        database_url = f"sqlite:///{work}/kartoteka.sqlite3"
    else:
        database_url = args.database_url
        await ensure_database(database_url)
        import asyncpg

        conn = await asyncpg.connect(database_url)
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        await conn.close()
    env = production_env(database_url, args.broker_url, work, free_port())
    env["KARTOTEKA_PLUGINS"] = "telephony"
    env["KARTOTEKA_LOCALE"] = "en"
    await asyncio.to_thread(migrate, env)
    await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-c",
            SETUP,
            str(pbx.port),
            str(args.calls),
            str(FIRST_EXTENSION),
            PASSWORD,
        ],
        cwd=ROOT,
        env=env,
        check=True,
    )
    server = Server(env, work / "server.log")
    scheduler = Scheduler(env, work / "scheduler.log") if args.mode == "server" else None
    try:
        await asyncio.to_thread(server.wait_until_ready)
        await pbx.wait_login(1, timeout=60)
        latencies = await measure(server.base_url, pbx, args.calls, args.rounds)
    finally:
        server.stop()
        if scheduler:
            scheduler.stop()
        await pbx.stop()
        await asyncio.sleep(0.2)  # its connection handlers see the close and finish
    ms = sorted(x * 1000 for x in latencies)
    return {
        "mode": args.mode,
        "calls": args.calls,
        "rounds": args.rounds,
        "samples": len(ms),
        "p50_ms": round(statistics.median(ms), 1),
        "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 1),
        "max_ms": round(ms[-1], 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mode", choices=("embedded", "server"), default="embedded")
    parser.add_argument("--calls", type=int, default=50, help="simultaneous calls per round")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_TELEPHONY_DATABASE_URL",
            "postgresql://postgres@127.0.0.1:5432/kartoteka_live_bench",
        ),
        help="server mode: a PostgreSQL database the benchmark may wipe",
    )
    parser.add_argument(
        "--broker-url", default=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/13")
    )
    result = asyncio.run(run(parser.parse_args()))
    print(
        f"screen pop, {result['mode']} mode, {result['calls']} simultaneous calls × "
        f"{result['rounds']} rounds ({result['samples']} pop-ups): "
        f"p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms, max {result['max_ms']} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
