"""Entrypoint of the appliance image: prepare the database, then run and watch the app.

Runs under tini as the unprivileged user ``kartoteka``. First ``kartoteka upgrade``
(when the installed version has it: pre-upgrade snapshot, migrations, roll-back on
failure), then ``kartoteka migrate``, which also creates the first admin and prints
the login once, so it shows in the container's log. Then the processes of this
container's role start; one that exits is started again after a pause that doubles
up to 30 s, and one that exits 5 times within a minute makes the supervisor stop the
others and exit 1, so that the container runtime's restart policy and logs take over.
SIGTERM and SIGINT go to every child; the supervisor exits 0 once they are gone.

``KARTOTEKA_ROLE`` says what this container does, comma-separated among ``migrate``
(the database step above; alone, the container exits after it), ``web``, ``worker``
and ``scheduler``. Unset: ``migrate,web`` in embedded mode (no BROKER_URL: jobs and
schedule run inside the web process), ``migrate,web,worker,scheduler`` in server
mode. Exactly one container of an install may run ``scheduler``.

Arguments: none supervises; ``healthcheck`` is the image's HEALTHCHECK; anything else
runs instead of the supervisor (``podman run ... IMAGE kartoteka users list``). Nothing
here prints the environment or a setting's value: secrets stay out of the logs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROLES = ("migrate", "web", "worker", "scheduler")
COMMANDS = {
    "web": ["kartoteka", "run"],
    "worker": ["kartoteka", "worker"],
    "scheduler": ["kartoteka", "scheduler"],
}
STATE_FILE = Path(tempfile.gettempdir()) / "kartoteka-supervisor.json"
UPGRADE_FAILED = "upgrade-failed.json"
"""Written by ``kartoteka upgrade`` when it rolled a failed upgrade back (core.upgrade)."""
"""What the healthcheck reads: each child's pid (None while it is down), the probe URL."""
CRASH_LIMIT = 5
CRASH_WINDOW = 60.0
BACKOFF_MAX = 30.0
STOP_TIMEOUT = float(os.environ.get("KARTOTEKA_STOP_TIMEOUT", "40"))
"""Seconds children get to finish after SIGTERM (a worker finishes its running jobs)."""


def log(message: str) -> None:
    print(f"supervisor: {message}", file=sys.stderr, flush=True)


def describe(returncode: int) -> str:
    if returncode < 0:
        return f"signal {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"


class SetupError(Exception):
    """The container cannot start as configured; the message says what to change."""


def choose_roles(embedded: bool) -> list[str]:
    raw = os.environ.get("KARTOTEKA_ROLE", "").strip()
    if not raw:
        return ["migrate", "web"] if embedded else list(ROLES)
    chosen = list(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    unknown = [name for name in chosen if name not in ROLES]
    if unknown or not chosen:
        raise SetupError(f"KARTOTEKA_ROLE: expected some of {', '.join(ROLES)}, got {raw!r}")
    separate = [name for name in chosen if name in ("worker", "scheduler")]
    if embedded and separate:
        raise SetupError(
            f"KARTOTEKA_ROLE has {', '.join(separate)}, which need BROKER_URL (server mode); "
            "without it the web process runs the jobs and the schedule itself"
        )
    return chosen


def check_data_dir(path: Path) -> None:
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise SetupError(
            f"{path} is not writable by uid {os.getuid()} ({exc.strerror}); give the volume "
            f"to that user, e.g. chown -R {os.getuid()}:{os.getgid()} on the host folder"
        ) from None


@dataclass
class Child:
    name: str
    command: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    start_at: float = 0.0
    delay: float = 1.0
    exits: deque[float] = field(default_factory=deque)


class Supervisor:
    def __init__(self, names: list[str], probe_url: str | None) -> None:
        self.children = [Child(name, COMMANDS[name]) for name in names]
        self.probe_url = probe_url
        self.step: subprocess.Popen[bytes] | None = None
        self.stop_signal: int | None = None

    def live(self) -> list[subprocess.Popen[bytes]]:
        procs = [child.proc for child in self.children if child.proc is not None]
        if self.step is not None:
            procs.append(self.step)
        return [proc for proc in procs if proc.poll() is None]

    def on_signal(self, signum: int, frame: Any) -> None:
        if self.stop_signal is None:
            log(f"{signal.Signals(signum).name} received: stopping")
        self.stop(signum)

    def stop(self, signum: int) -> None:
        self.stop_signal = signum
        for proc in self.live():
            proc.send_signal(signum)

    def prepare(self, data_dir: Path) -> int:
        """The database step; non-zero when the app must not start on this database.

        A failed upgrade is not such a case: the database was put back, and the web
        process serves the maintenance page that tells the owner what happened.
        """
        for command in (["kartoteka", "upgrade"], ["kartoteka", "migrate"]):
            if self.stop_signal is not None:
                return 0
            log("running " + " ".join(command))
            self.step = subprocess.Popen(command, stdin=subprocess.DEVNULL)
            returncode = self.step.wait()
            self.step = None
            if self.stop_signal is not None:
                return 0
            if returncode != 0 and (data_dir / UPGRADE_FAILED).exists():
                log("the upgrade failed and was rolled back: serving the maintenance page only")
                self.children = [child for child in self.children if child.name == "web"]
                return 0
            if returncode != 0:
                log(
                    f"{' '.join(command)} failed ({describe(returncode)}), see above: "
                    "Kartoteka not started (docs/appliance.md, Upgrades)"
                )
                return returncode if returncode > 0 else 1
        return 0

    def start(self, child: Child) -> None:
        log(f"starting {child.name}: {' '.join(child.command)}")
        child.proc = subprocess.Popen(child.command, stdin=subprocess.DEVNULL)
        child.started = time.monotonic()
        if self.stop_signal is not None:  # a signal between the check and the start
            child.proc.send_signal(self.stop_signal)

    def reap(self, child: Child, returncode: int, now: float) -> bool:
        """Schedule the restart of a child that exited; False when it keeps crashing."""
        child.proc = None
        child.exits.append(now)
        while child.exits and now - child.exits[0] > CRASH_WINDOW:
            child.exits.popleft()
        ran = now - child.started
        if len(child.exits) >= CRASH_LIMIT:
            log(
                f"{child.name} exited {len(child.exits)} times within {CRASH_WINDOW:.0f}s "
                f"(last: {describe(returncode)}): giving up"
            )
            return False
        if ran > CRASH_WINDOW:
            child.delay = 1.0  # it had been running fine: this is a fresh failure
        log(
            f"{child.name} exited ({describe(returncode)}) after {ran:.0f}s; "
            f"restarting in {child.delay:.0f}s"
        )
        child.start_at = now + child.delay
        child.delay = min(child.delay * 2, BACKOFF_MAX)
        return True

    def write_state(self) -> None:
        running = {c.name: c.proc for c in self.children if c.proc and c.proc.poll() is None}
        state = {
            "probe_url": self.probe_url,
            "children": {
                c.name: running[c.name].pid if c.name in running else None for c in self.children
            },
        }
        tmp = STATE_FILE.with_suffix(".tmp")
        tmp.write_text(json.dumps(state), encoding="utf-8")
        os.replace(tmp, STATE_FILE)

    def run(self) -> int:
        healthy = True
        while self.stop_signal is None:
            now = time.monotonic()
            for child in self.children:
                if child.proc is None:
                    if now >= child.start_at:
                        self.start(child)
                    continue
                returncode = child.proc.poll()
                if returncode is not None and not self.reap(child, returncode, now):
                    healthy = False
            if not healthy:
                self.stop(signal.SIGTERM)
                break
            self.write_state()
            time.sleep(0.5)
        self.wait_for_children()
        STATE_FILE.unlink(missing_ok=True)
        return 0 if healthy else 1

    def wait_for_children(self) -> None:
        deadline = time.monotonic() + STOP_TIMEOUT
        while self.live() and time.monotonic() < deadline:
            time.sleep(0.2)
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                log(f"{child.name} did not stop within {STOP_TIMEOUT:.0f}s: killing it")
                child.proc.kill()
                child.proc.wait()
            elif child.proc is not None:
                log(f"{child.name} stopped ({describe(child.proc.returncode)})")


def supervise() -> int:
    from core.settings import SettingsError, load_settings

    os.umask(0o027)  # the database, dumps and attachments are nobody else's business
    STATE_FILE.unlink(missing_ok=True)  # left by the run before a `podman restart`
    try:
        settings = load_settings()
        names = choose_roles(settings.embedded)
        check_data_dir(settings.data_dir)
    except (SettingsError, SetupError) as exc:
        log(f"error: {exc}")
        return 2
    host = "127.0.0.1" if settings.host in ("", "0.0.0.0", "::") else settings.host
    probe_url = f"http://{host}:{settings.port}/healthz" if "web" in names else None
    supervisor = Supervisor([n for n in names if n != "migrate"], probe_url)
    signal.signal(signal.SIGTERM, supervisor.on_signal)
    signal.signal(signal.SIGINT, supervisor.on_signal)
    mode = "embedded" if settings.embedded else "server"
    log(f"mode: {mode}; role: {', '.join(names)}; data: {settings.data_dir}")
    if "migrate" in names:
        returncode = supervisor.prepare(settings.data_dir)
        if returncode != 0 or supervisor.stop_signal is not None:
            return returncode
    if not supervisor.children:
        log("nothing else to run in this role: done")
        return 0
    return supervisor.run()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or the number was reused
        return False
    return True


def healthcheck() -> int:
    """Every child runs, and the web process (if this container has one) answers /healthz."""
    try:
        state = json.loads(STATE_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        print("unhealthy: the supervisor has not started the processes yet")
        return 1
    down = [name for name, pid in state["children"].items() if pid is None or not _alive(pid)]
    if down:
        print(f"unhealthy: not running: {', '.join(down)}")
        return 1
    if state["probe_url"]:
        try:
            with urllib.request.urlopen(state["probe_url"], timeout=5) as response:
                body = response.read().decode("utf-8", "replace")
        except OSError as exc:
            print(f"unhealthy: {state['probe_url']}: {exc}")
            return 1
        print(body)
    return 0


def main(argv: list[str]) -> int:
    if not argv:
        return supervise()
    if argv == ["healthcheck"]:
        return healthcheck()
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        print(f"error: cannot run {argv[0]}: {exc.strerror}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
