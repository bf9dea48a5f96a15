"""The appliance: its supervisor, its compose file, and the image built and run by podman.

The image tests build the image from this tree and run it: the app answers, a client
created over HTTP survives a restart, a backup made inside the container restores, the
server-mode processes run and come back when killed, and no secret reaches the logs.
They take minutes, so they run only when asked: ``make test-appliance`` (which sets
KARTOTEKA_TEST_APPLIANCE=1 after installing podman, runc and debootstrap). Base images
cannot be pulled on the CI machines: the Debian base comes from debootstrap, cached
under /var/cache/kartoteka-test, imported under the name the Containerfile's FROM uses.

The supervisor tests run the entrypoint on this machine with stand-in children.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SUPERVISOR = ROOT / "appliance" / "supervisor.py"
BASE_IMAGE = "localhost/kartoteka-base:bookworm"
DEPS_IMAGE = "localhost/kartoteka-appliance-deps:cache"
"""The dependency stage, kept tagged (like the base) so that a rerun reuses it."""
CACHE_DIR = Path(os.environ.get("KARTOTEKA_TEST_CACHE", "/var/cache/kartoteka-test"))
DEBIAN_MIRROR = os.environ.get("KARTOTEKA_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PG_ADMIN_URL = os.environ.get(
    "KARTOTEKA_APPLIANCE_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("KARTOTEKA_APPLIANCE_REDIS_URL", "redis://127.0.0.1:6379/12")
# crun fails on these machines; the defaults of nofile/nproc are above what they allow.
RUNTIME = ["--runtime", "runc", "--network", "host"]
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
FIRST_ADMIN = re.compile(r"First admin login:\s+user: (\S+)\s+password: (\S+)")

when_asked = pytest.mark.skipif(
    not os.environ.get("KARTOTEKA_TEST_APPLIANCE"),
    reason="builds and runs the appliance image (minutes): `make test-appliance` runs it",
)


# --- the supervisor, on this machine ---------------------------------------------------

FAKE_KARTOTEKA = """\
import os, pathlib, signal, sys, time

command = sys.argv[1]
if command == "upgrade":
    if os.environ.get("FAKE_UPGRADE") == "rolled-back":
        data = pathlib.Path(os.environ["KARTOTEKA_DATA_DIR"])
        (data / "upgrade-failed.json").write_text("{}")
        sys.exit(3)
    sys.exit(int(os.environ.get("FAKE_UPGRADE_EXIT", "0")))
if command == "migrate":
    print("migrated", flush=True)
    sys.exit(int(os.environ.get("FAKE_MIGRATE_EXIT", "0")))
if os.environ.get("FAKE_MODE") == "crash":
    sys.exit(1)
folder = pathlib.Path(os.environ["FAKE_DIR"])

def stop(signum, frame):
    (folder / f"{command}.stopped").write_text(str(signum))
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)
(folder / f"{command}.pid").write_text(str(os.getpid()))
while True:
    time.sleep(0.1)
"""


@pytest.fixture
def supervisor_env(tmp_path: Path) -> dict[str, str]:
    """A stand-in `kartoteka` first on PATH, an empty data dir, embedded mode."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "kartoteka"
    fake.write_text(f"#!{sys.executable}\n{FAKE_KARTOTEKA}")
    fake.chmod(0o755)
    (tmp_path / "data").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KARTOTEKA_", "FAKE_"))}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env['PATH']}",
        TMPDIR=str(tmp_path),  # the supervisor's state file for the healthcheck
        FAKE_DIR=str(tmp_path),
        KARTOTEKA_DATA_DIR=str(tmp_path / "data"),
        KARTOTEKA_SECRET_KEY="not-a-real-key",
        DATABASE_URL="",
        BROKER_URL="",
    )
    return env


def _supervisor(env: dict[str, str], *args: str, **kwargs: Any) -> Any:
    return subprocess.Popen(
        [sys.executable, str(SUPERVISOR), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def _wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.mark.slow
def test_supervisor_restarts_a_crashing_child_then_gives_up(
    supervisor_env: dict[str, str],
) -> None:
    started = time.monotonic()
    proc = _supervisor({**supervisor_env, "FAKE_MODE": "crash"})
    output, _ = proc.communicate(timeout=90)
    assert proc.returncode == 1, output
    assert "running kartoteka upgrade" in output and "running kartoteka migrate" in output
    assert re.search(r"web exited \(exit code 1\) after \d+s; restarting in 1s", output)
    assert "restarting in 2s" in output and "restarting in 8s" in output
    assert "web exited 5 times within 60s (last: exit code 1): giving up" in output
    assert time.monotonic() - started >= 1 + 2 + 4 + 8  # the pauses were kept


@pytest.mark.slow
def test_supervisor_runs_the_role_restarts_and_stops_on_sigterm(
    supervisor_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **supervisor_env,
        "BROKER_URL": "redis://127.0.0.1:1/0",  # server mode; nothing connects to it
        "KARTOTEKA_ROLE": "migrate,worker,scheduler",
    }
    proc = _supervisor(env)
    try:

        def pid_of(name: str) -> int | None:
            path = tmp_path / f"{name}.pid"
            return int(path.read_text()) if path.exists() else None

        worker = _wait_for(lambda: pid_of("worker"), 20, "the worker")
        _wait_for(lambda: pid_of("scheduler"), 20, "the scheduler")

        def healthcheck() -> subprocess.CompletedProcess[str]:
            command = [sys.executable, str(SUPERVISOR), "healthcheck"]
            return subprocess.run(command, env=env, capture_output=True, text=True)

        _wait_for(lambda: healthcheck().returncode == 0, 10, "a passing healthcheck")
        os.kill(worker, signal.SIGKILL)
        _wait_for(lambda: healthcheck().returncode == 1, 10, "a failing healthcheck")
        _wait_for(lambda: pid_of("worker") not in (None, worker), 20, "the worker's restart")
        _wait_for(lambda: healthcheck().returncode == 0, 10, "a passing healthcheck again")
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, output
    assert "web" not in re.findall(r"starting (\w+):", output)
    assert "worker exited (signal SIGKILL)" in output and "restarting in 1s" in output
    assert (tmp_path / "worker.stopped").read_text() == str(int(signal.SIGTERM))
    assert (tmp_path / "scheduler.stopped").exists()
    assert "worker stopped (exit code 0)" in output
    assert healthcheck().returncode == 1  # no supervisor, no state: unhealthy


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env", "code", "message"),
    [
        ({"KARTOTEKA_ROLE": "web,worker"}, 2, "worker, which need BROKER_URL"),
        ({"KARTOTEKA_ROLE": "web,cron"}, 2, "KARTOTEKA_ROLE: expected some of"),
        ({"KARTOTEKA_DATA_DIR": "/etc/hostname"}, 2, "/etc/hostname is not writable"),
        ({"BROKER_URL": "http://example.org/"}, 2, "BROKER_URL must be"),
        ({"FAKE_MIGRATE_EXIT": "5"}, 5, "kartoteka migrate failed (exit code 5)"),
        ({"FAKE_UPGRADE_EXIT": "2"}, 2, "kartoteka upgrade failed (exit code 2)"),
    ],
)
def test_supervisor_refuses_to_start_what_cannot_work(
    supervisor_env: dict[str, str], env: dict[str, str], code: int, message: str
) -> None:
    proc = _supervisor({**supervisor_env, **env})
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == code, output
    assert message in output
    assert "starting web" not in output


@pytest.mark.slow
def test_after_a_rolled_back_upgrade_only_the_web_runs(
    supervisor_env: dict[str, str], tmp_path: Path
) -> None:
    """The web process serves the maintenance page with the reason; nothing else starts."""
    env = {
        **supervisor_env,
        "FAKE_UPGRADE": "rolled-back",
        "BROKER_URL": "redis://127.0.0.1:1/0",
        "KARTOTEKA_ROLE": "migrate,web,worker,scheduler",
    }
    proc = _supervisor(env)
    try:
        _wait_for(lambda: (tmp_path / "run.pid").exists(), 20, "the web process")
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert "serving the maintenance page only" in output
    assert "running kartoteka migrate" not in output
    assert re.findall(r"starting (\w+):", output) == ["web"]


def test_supervisor_runs_a_given_command_instead(supervisor_env: dict[str, str]) -> None:
    proc = _supervisor(supervisor_env, "sh", "-c", "echo one-off")
    assert proc.communicate(timeout=10)[0] == "one-off\n"


def test_compose_file_describes_the_scaled_out_install() -> None:
    compose = yaml.safe_load((ROOT / "appliance" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "web", "worker", "scheduler"} <= set(services)
    replicas = {name: services[name].get("deploy", {}).get("replicas", 1) for name in services}
    assert replicas["web"] >= 2 and replicas["worker"] >= 2 and replicas["scheduler"] == 1
    app = ("migrate", "web", "worker", "scheduler")
    assert len({services[name]["image"] for name in app}) == 1
    for name in app:
        service = services[name]
        env = service["environment"]
        assert env["KARTOTEKA_ROLE"] == name
        assert env["DATABASE_URL_FILE"] == "/run/secrets/database_url"
        assert env["KARTOTEKA_BACKUP_PASSWORD_FILE"] == "/run/secrets/backup_password"
        assert "kartoteka-data:/data" in service["volumes"]
        assert set(service["secrets"]) <= set(compose["secrets"])
        for key, value in env.items():  # secrets only through files
            assert key != "DATABASE_URL" and ("PASSWORD" not in key or key.endswith("_FILE"))
            assert not re.search(r"://[^/@\s]*:[^/@\s]*@", str(value)), key
    for name in ("web", "worker", "scheduler"):
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
    assert services["web"]["environment"]["KARTOTEKA_WEB_WORKERS"]
    assert "build" in services["migrate"]
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"]
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./secrets/")


# --- the image, built and run by podman -------------------------------------------------


def podman(*args: str, check: bool = True, timeout: float = 300) -> Any:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args[:3])} … failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def _require_podman() -> None:
    if not (shutil.which("podman") and shutil.which("runc") and shutil.which("debootstrap")):
        installed = subprocess.run(
            ["bash", str(ROOT / "scripts" / "appliance-test-deps.sh")],
            capture_output=True,
            text=True,
        )
        if installed.returncode != 0 or not shutil.which("podman"):
            pytest.skip(
                "podman cannot be installed here (scripts/appliance-test-deps.sh: "
                f"{(installed.stderr or installed.stdout).strip()[-300:]})"
            )


def _ensure_base_image() -> None:
    """debootstrap once into the cache folder, import when podman lacks the image."""
    if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        return
    root, done = CACHE_DIR / "bookworm-minbase", CACHE_DIR / "bookworm-minbase.done"
    if not done.exists():
        work = CACHE_DIR / "bookworm-minbase.tmp"
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        command = ["debootstrap", "--variant=minbase", "bookworm", str(work), DEBIAN_MIRROR]
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (work / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        work.rename(root)
        done.touch()
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    imported = subprocess.run(
        ["podman", "import", "-", BASE_IMAGE], stdin=tar.stdout, capture_output=True, timeout=600
    )
    assert tar.wait() == 0 and imported.returncode == 0, imported.stderr


def _host_ca_bundle() -> Path | None:
    """The CA bundle this machine's pip trusts (a TLS-inspecting proxy adds its CA)."""
    names = ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")
    candidates = [os.environ.get(name) for name in names]
    candidates += ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate).resolve()
    return None


def _image_id(name: str) -> str | None:
    result = podman("image", "inspect", "--format", "{{.Id}}", name, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    _require_podman()
    started = time.monotonic()
    _ensure_base_image()
    base_seconds = time.monotonic() - started
    tag = f"localhost/kartoteka-appliance:test-{secrets.token_hex(4)}"
    build = ["build", "--format", "docker", *RUNTIME, *ULIMITS, "-f", "appliance/Containerfile"]
    ca_bundle = _host_ca_bundle()
    if ca_bundle:
        build += ["--secret", f"id=ca,src={ca_bundle}"]
    previous_deps = _image_id(DEPS_IMAGE)
    started = time.monotonic()
    podman(*build, "--target", "deps", "-t", DEPS_IMAGE, str(ROOT), timeout=1800)
    podman(*build, "-t", tag, str(ROOT), timeout=1800)
    print(f"\nappliance: base ready in {base_seconds:.0f}s, image built in ", end="")
    print(f"{time.monotonic() - started:.0f}s")
    if previous_deps and previous_deps != _image_id(DEPS_IMAGE):
        podman("rmi", previous_deps, check=False)  # the cache of an older pyproject.toml
    yield tag
    podman("rmi", "--force", tag, check=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Appliance:
    """One container of the image under test, and what is needed to clean it up."""

    def __init__(self, image: str, cleanup: ExitStack, tmp_path: Path) -> None:
        self.image, self.cleanup, self.tmp_path = image, cleanup, tmp_path
        self.name = f"kartoteka-test-{secrets.token_hex(4)}"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def secret(self, label: str, value: str) -> str:
        """A podman secret readable by the image's user; returns its path inside."""
        name = f"{self.name}-{label}"
        path = self.tmp_path / name
        path.write_text(value + "\n")
        podman("secret", "create", name, str(path))
        self.cleanup.callback(podman, "secret", "rm", name, check=False)
        return name

    def run(self, env: dict[str, str], secret_names: list[str]) -> None:
        volume = f"{self.name}-data"
        podman("volume", "create", volume)
        self.cleanup.callback(podman, "volume", "rm", "--force", volume, check=False)
        args = ["run", "--detach", "--name", self.name, *RUNTIME, *ULIMITS]
        args += ["--volume", f"{volume}:/data"]
        for name in secret_names:
            args += ["--secret", f"{name},uid=10001,gid=10001,mode=0400"]
        for key, value in {"KARTOTEKA_PORT": str(self.port), **env}.items():
            args += ["--env", f"{key}={value}"]
        self.cleanup.callback(podman, "rm", "--force", "--time", "0", self.name, check=False)
        podman(*args, self.image)

    def logs(self) -> str:
        result = podman("logs", self.name)
        return result.stdout + result.stderr

    def exec(self, *command: str, timeout: float = 300) -> Any:
        return podman("exec", self.name, *command, check=False, timeout=timeout)

    def wait_until_up(self, timeout: float = 180) -> None:
        def answers() -> bool:
            state = podman("inspect", "--format", "{{.State.Running}}", self.name)
            if state.stdout.strip() != "true":
                raise AssertionError(f"the container stopped:\n{self.logs()[-4000:]}")
            try:
                return httpx.get(self.url + "/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        _wait_for(answers, timeout, f"{self.url}/healthz")

    def wait_until_ready(self, timeout: float = 60) -> dict[str, Any]:
        def ready() -> Any:
            response = httpx.get(self.url + "/readyz", timeout=10)
            return response.json() if response.status_code == 200 else None

        return _wait_for(ready, timeout, f"{self.url}/readyz")

    def state(self) -> dict[str, Any]:
        result = self.exec("cat", "/tmp/kartoteka-supervisor.json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


@pytest.fixture
def appliance(image: str, tmp_path: Path) -> Iterator[Appliance]:
    with ExitStack() as cleanup:
        yield Appliance(image, cleanup, tmp_path)


def _login(http: httpx.Client, username: str, password: str) -> None:
    http.get("/login")
    response = http.post(
        "/login",
        data={
            "username": username,
            "password": password,
            "_csrf_token": http.cookies.get("csrftoken", ""),
        },
    )
    assert response.status_code == 303, response.text[-2000:]


def _create_client(http: httpx.Client, name: str) -> int:
    form = http.get("/clients/new")
    responsible = re.search(r'name="responsible">\s*<option value="(\d+)"', form.text)
    assert responsible, form.text[-2000:]
    response = http.post(
        "/clients",
        data={"kind": "company", "name": name, "responsible": responsible.group(1)},
        headers={"x-csrftoken": http.cookies.get("csrftoken") or ""},
    )
    assert response.status_code == 303, response.text[-2000:]
    match = re.fullmatch(r"/clients/(\d+)", response.headers["location"])
    assert match, response.headers["location"]
    return int(match.group(1))


def _client_page(appliance: Appliance, login: tuple[str, str], client_id: int) -> Any:
    with httpx.Client(base_url=appliance.url, timeout=30) as http:
        _login(http, *login)
        return http.get(f"/clients/{client_id}")


@pytest.mark.slow
@pytest.mark.appliance
@when_asked
def test_appliance_keeps_data_across_restarts_and_restores_a_backup(appliance: Appliance) -> None:
    started = time.monotonic()
    backup_password = "backup-pw-" + secrets.token_hex(12)
    secret_key = "secret-key-" + secrets.token_hex(24)
    secret_names = [
        appliance.secret("backup-password", backup_password),
        appliance.secret("secret-key", secret_key),
    ]
    appliance.run(
        {
            "KARTOTEKA_LOCALE": "en",
            "KARTOTEKA_BACKUP_REPOSITORY": "/data/backups",
            "KARTOTEKA_BACKUP_PASSWORD_FILE": f"/run/secrets/{secret_names[0]}",
            "KARTOTEKA_SECRET_KEY_FILE": f"/run/secrets/{secret_names[1]}",
        },
        secret_names,
    )
    appliance.wait_until_up()
    assert appliance.exec("id", "-u").stdout.strip() not in ("", "0")
    assert podman("healthcheck", "run", appliance.name, check=False).returncode == 0
    found = FIRST_ADMIN.search(appliance.logs())
    assert found, appliance.logs()[-4000:]
    login = (found.group(1), found.group(2))

    with httpx.Client(base_url=appliance.url, timeout=30) as http:
        _login(http, *login)
        kept = _create_client(http, "Appliance Restart LLC")
    podman("restart", "--time", "30", appliance.name)
    appliance.wait_until_up()
    page = _client_page(appliance, login, kept)
    assert page.status_code == 200 and "Appliance Restart LLC" in page.text
    assert len(FIRST_ADMIN.findall(appliance.logs())) == 1  # the admin was not made again

    backup = appliance.exec("kartoteka", "backup", "now")
    assert backup.returncode == 0, backup.stdout + backup.stderr
    listed = appliance.exec("kartoteka", "backup", "list")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    ids = re.findall(r"\b[0-9a-f]{8,64}\b", backup.stdout)
    snapshot = next((i for i in ids if i[:8] in listed.stdout), None)
    assert snapshot, f"no snapshot id of {backup.stdout!r} in {listed.stdout!r}"
    with httpx.Client(base_url=appliance.url, timeout=30) as http:
        _login(http, *login)
        lost = _create_client(http, "Made After The Backup LLC")
    restored = appliance.exec("kartoteka", "backup", "restore", snapshot, "--yes")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    appliance.wait_until_ready()
    page = _client_page(appliance, login, kept)
    assert page.status_code == 200 and "Appliance Restart LLC" in page.text
    assert _client_page(appliance, login, lost).status_code == 404

    logs = appliance.logs()
    assert backup_password not in logs and secret_key not in logs
    print(f"\nappliance: embedded test took {time.monotonic() - started:.0f}s after the build")


def _postgres(sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def _flush_redis() -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


@pytest.mark.slow
@pytest.mark.appliance
@when_asked
def test_server_mode_runs_web_worker_and_scheduler(appliance: Appliance) -> None:
    """One container with every process, on this machine's PostgreSQL and Redis."""
    database = f"kartoteka_appliance_{secrets.token_hex(4)}"
    db_password = "db-pw-" + secrets.token_hex(12)  # trust auth here: checked for leaks only
    _postgres(f"CREATE DATABASE {database}")
    appliance.cleanup.callback(_postgres, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    appliance.cleanup.callback(_flush_redis)
    host = PG_ADMIN_URL.split("@", 1)[1].rsplit("/", 1)[0]
    user = PG_ADMIN_URL.split("://", 1)[1].split("@", 1)[0].split(":", 1)[0]
    url_secret = appliance.secret(
        "database-url", f"postgresql://{user}:{db_password}@{host}/{database}"
    )
    appliance.run(
        {
            "DATABASE_URL_FILE": f"/run/secrets/{url_secret}",
            "BROKER_URL": REDIS_URL,
            "KARTOTEKA_WEB_WORKERS": "2",
        },
        [url_secret],
    )
    appliance.wait_until_up()
    checks = appliance.wait_until_ready()["checks"]
    assert checks["broker"] == {"kind": "redis", "ok": True} and checks["database"]["ok"]
    assert podman("healthcheck", "run", appliance.name, check=False).returncode == 0
    children = appliance.state()["children"]
    assert set(children) == {"web", "worker", "scheduler"}
    assert all(isinstance(pid, int) for pid in children.values()), children

    worker = children["worker"]
    killed = appliance.exec("python3", "-c", f"import os; os.kill({worker}, 9)")
    assert killed.returncode == 0, killed.stderr
    _wait_for(
        lambda: appliance.state()["children"]["worker"] not in (None, worker),
        30,
        "the worker's restart",
    )
    assert "worker exited (signal SIGKILL)" in appliance.logs()

    podman("stop", "--time", "60", appliance.name)
    inspect = podman("inspect", "--format", "{{.State.ExitCode}}", appliance.name)
    assert inspect.stdout.strip() == "0"
    logs = appliance.logs()
    for name in ("web", "worker", "scheduler"):
        assert f"supervisor: {name} stopped" in logs
    assert db_password not in logs
