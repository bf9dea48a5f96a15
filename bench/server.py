"""`kartoteka run` as a benchmark subject: configured, started, waited for, measured, stopped."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


class ServerError(RuntimeError):
    pass


def production_env(database_url: str, broker_url: str, data_dir: Path, port: int) -> dict[str, str]:
    """Production settings: a broker (server mode) unless the database is SQLite, two web
    workers, no debug, no plugins; nothing inherited from a developer's KARTOTEKA_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KARTOTEKA_")}
    env.update(
        DATABASE_URL=database_url,
        BROKER_URL="" if database_url.startswith("sqlite") else broker_url,
        KARTOTEKA_DATA_DIR=str(data_dir),
        KARTOTEKA_PLUGINS="",
        KARTOTEKA_WEB_WORKERS="2",
        KARTOTEKA_DEBUG="false",
        KARTOTEKA_HOST="127.0.0.1",
        KARTOTEKA_PORT=str(port),
    )
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def ensure_database(database_url: str) -> None:
    """CREATE DATABASE for a PostgreSQL URL whose database does not exist yet."""
    import asyncpg

    try:
        conn = await asyncpg.connect(database_url)
    except asyncpg.InvalidCatalogNameError:
        base, name = database_url.rsplit("/", 1)
        admin = await asyncpg.connect(f"{base}/postgres")
        try:
            await admin.execute(f'CREATE DATABASE "{name.split("?", 1)[0]}"')
        finally:
            await admin.close()
    else:
        await conn.close()


def migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "core", "migrate"],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


class Server:
    """`python -m core run` in its own process group, so its workers stop with it."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.base_url = f"http://127.0.0.1:{env['KARTOTEKA_PORT']}"
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "core", "run"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def wait_until_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"the server exited:\n{self._log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/login", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise ServerError(f"the server did not answer in {timeout:.0f} s:\n{self._log_tail()}")

    def rss_mb(self) -> list[float]:
        """Resident memory of the server and every process under it, in MB."""
        return [size for pid in _process_tree(self.process.pid) if (size := _rss_mb(pid))]

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the server and every process under it."""
        return sum(_cpu_seconds(pid) for pid in _process_tree(self.process.pid))

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _process_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))[1]
        if fields:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def postgres_cpu_seconds() -> float:
    """CPU time used so far by this machine's PostgreSQL processes (0 when none run here)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            name, fields = _stat_fields(int(entry.name))
            if name == "postgres":
                total += _ticks_seconds(fields)
    return total


def _stat_fields(pid: int) -> tuple[str, list[str]]:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "", []
    name, rest = stat.split("(", 1)[1].rsplit(")", 1)
    return name, rest.split()


def _cpu_seconds(pid: int) -> float:
    return _ticks_seconds(_stat_fields(pid)[1])


def _ticks_seconds(fields: list[str]) -> float:
    # utime and stime, the 14th and 15th fields of /proc/<pid>/stat, in clock ticks
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if fields else 0.0


def _rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else 0.0
