"""restic, driven by subprocess: version-aware, JSON where it exists, errors in plain words.

Debian 12 ships restic 0.14, which prints text where newer versions print JSON and
exits 1 for every failure; 0.17 added exit codes 10 (no repository) and 11 (locked),
0.17.1 code 12 (wrong password). So failures are classified by exit code when the
version has them and by stderr text always. The password reaches restic only through
``RESTIC_PASSWORD_FILE``: never on a command line, in the environment or in a log.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO, Any

from core.i18n import _

HOST = "kartoteka"
"""The fixed ``--host`` of every snapshot, so that ``forget`` groups them all together."""
TAG = "kartoteka"
FILES_TAG = "files"
"""The snapshot with the manifest, the files and (SQLite) the database copy."""
PGDUMP_TAG = "pgdump"
"""PostgreSQL only: the companion snapshot holding the ``pg_dump -Fc`` stream."""

_INHERITED_SECRETS = ("RESTIC_PASSWORD", "RESTIC_PASSWORD_COMMAND", "RESTIC_REPOSITORY_FILE")
_PASSED_ON = (
    "PATH",
    "HOME",
    "TMPDIR",
    "LANG",
    "TZ",
    "SSH_AUTH_SOCK",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
_PASSED_ON_PREFIXES = (
    "LC_",
    "RESTIC_",  # e.g. RESTIC_REST_USERNAME, RESTIC_COMPRESSION
    "AWS_",
    "B2_",
    "AZURE_",
    "GOOGLE_",
    "OS_",
    "ST_",
    "RCLONE_",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)
"""What restic may see of our environment: storage credentials, never the app's secrets."""


@dataclass(frozen=True, order=True)
class Version:
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> Version:
        match = re.search(r"restic (\d+)\.(\d+)\.(\d+)", text)
        if not match:
            raise ResticError(
                "failed", _("Cannot tell the restic version from: %(text)s", text=text)
            )
        return cls(*(int(part) for part in match.groups()))

    def at_least(self, major: int, minor: int, patch: int = 0) -> bool:
        return self >= Version(major, minor, patch)

    @property
    def has_exit_codes(self) -> bool:
        """10 = no repository and 11 = locked since 0.17.0; 12 = wrong password since 0.17.1."""
        return self.at_least(0, 17)

    @property
    def init_prints_json(self) -> bool:
        return self.at_least(0, 15)

    @property
    def backup_prints_full_id(self) -> bool:
        return self.at_least(0, 15)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


class ResticError(Exception):
    """A restic failure in words an administrator can act on.

    ``kind`` is one of: not_installed, not_configured, password_file, wrong_password,
    missing_repository, locked, disk_full, unreachable, permission, failed.
    """

    def __init__(self, kind: str, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.detail = detail


def redact(text: str) -> str:
    """Hide credentials written into a repository URL (``rest:https://user:pass@host``)."""
    return re.sub(r"(//)[^/@\s:]+:[^/@\s]+@", r"\1***@", text)


def _text_of(line: str) -> str:
    """restic 0.18+ reports fatal errors as JSON (``exit_error``) when given --json."""
    if line.startswith("{"):
        try:
            message = json.loads(line)
            error = message.get("error")
            if isinstance(error, dict):  # {"message_type":"error","error":{...},"item":...}
                return f"{message.get('item', '')}: {error.get('message', '')}".lstrip(": ")
            return str(message.get("message", ""))
        except (ValueError, AttributeError):
            return ""
    return line


def _last_lines(stderr: str, count: int = 3) -> str:
    lines = [_text_of(line.strip()) for line in stderr.strip().splitlines()]
    useful = [line for line in lines if line and not line.startswith("using temporary cache")]
    return redact(" ".join(useful[-count:]))[:500]


_NETWORK_WORDS = (
    "connection refused",
    "no such host",
    "network is unreachable",
    "no route to host",
    "i/o timeout",
    "connection reset",
    "connection timed out",
    "tls handshake",
    "dial tcp",
    "ssh command exited",
    "subprocess ssh",
    "could not resolve",
    "temporary failure in name resolution",
)


def classify(
    returncode: int, stderr: str, version: Version | None, repository: str, password_file: str
) -> ResticError:
    """Turn a failed restic run into a `ResticError` with a plain-language message."""
    text = " ".join(_text_of(line.strip()) or line for line in stderr.splitlines()).lower()
    codes = version is not None and version.has_exit_codes
    repo = redact(repository)
    if (codes and returncode == 12) or "wrong password" in text:
        return ResticError(
            "wrong_password",
            _(
                "The backup password is wrong: restic cannot open the repository %(repo)s "
                "with the password in %(file)s.",
                repo=repo,
                file=password_file,
            ),
            _last_lines(stderr),
        )
    if "already locked" in text or (codes and returncode == 11):
        return ResticError("locked", _locked_message(stderr), _last_lines(stderr, 5))
    if "no space left on device" in text or "disk full" in text or "quota exceeded" in text:
        return ResticError(
            "disk_full",
            _(
                "No space left on a disk (the backup repository's or this server's): "
                "free some space, then run the backup again."
            ),
            _last_lines(stderr),
        )
    if (
        (codes and returncode == 10)
        or "is there a repository at the following location" in text
        or "repository does not exist" in text
    ):
        return ResticError(
            "missing_repository",
            _(
                "There is no backup repository at %(repo)s: it does not exist or was never "
                "initialised.",
                repo=repo,
            ),
            _last_lines(stderr),
        )
    if any(word in text for word in _NETWORK_WORDS):
        return ResticError(
            "unreachable",
            _(
                "The backup repository %(repo)s cannot be reached (%(reason)s). Check the "
                "network and the backup server.",
                repo=repo,
                reason=_last_lines(stderr, 1),
            ),
            _last_lines(stderr),
        )
    if "permission denied" in text:
        return ResticError(
            "permission",
            _("Permission denied: %(reason)s", reason=_last_lines(stderr, 1)),
            _last_lines(stderr),
        )
    return ResticError(
        "failed",
        _(
            "restic failed (exit code %(code)s): %(reason)s",
            code=returncode,
            reason=_last_lines(stderr) or _("no message"),
        ),
        _last_lines(stderr, 10),
    )


def _locked_message(stderr: str) -> str:
    holder = re.search(r"locked (?:exclusively )?by PID (\d+) on (\S+) by ([^(\n]+?)\s*\(", stderr)
    since = re.search(r"lock was created at ([^(\n]+?)\s*\(", stderr)
    if holder:
        who = _(
            "process %(pid)s on %(host)s, user %(user)s",
            pid=holder.group(1),
            host=holder.group(2),
            user=holder.group(3),
        )
        if since:
            who += ", " + _("since %(time)s", time=since.group(1))
        return _(
            "The backup repository is locked by another restic process (%(who)s). If no "
            "backup is running any more, remove the stale lock with `restic unlock`.",
            who=who,
        )
    return _(
        "The backup repository is locked by another restic process. If no backup is running "
        "any more, remove the stale lock with `restic unlock`."
    )


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


class Restic:
    """One repository, its password file and a local cache."""

    def __init__(
        self, repository: str, password_file: str, cache_dir: Path, binary: str = "restic"
    ) -> None:
        self.repository = repository
        self.password_file = password_file
        self.cache_dir = cache_dir
        self.binary = binary

    @classmethod
    def from_settings(cls, settings: Any) -> Restic:
        if not settings.backup_repository:
            raise ResticError(
                "not_configured",
                _("Backups are not configured: set backup_repository."),
            )
        return cls(
            settings.backup_repository,
            settings.backup_password_file,
            settings.data_dir / "restic-cache",
        )

    # --- process plumbing ----------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """Storage credentials from our environment (S3, B2, REST…) plus our repository and
        password file, and no other way of handing restic a password."""
        self._check_password_file()
        env = {
            k: v
            for k, v in os.environ.items()
            if (k in _PASSED_ON or k.startswith(_PASSED_ON_PREFIXES))
            and k not in _INHERITED_SECRETS
        }
        env.update(
            RESTIC_REPOSITORY=self.repository,
            RESTIC_PASSWORD_FILE=self.password_file,
            RESTIC_CACHE_DIR=str(self.cache_dir),
            RESTIC_PROGRESS_FPS="0.2",
        )
        return env

    def _check_password_file(self) -> None:
        if not self.password_file:
            raise ResticError(
                "password_file",
                _("The backup password file is not set: set backup_password_file."),
            )
        path = Path(self.password_file)
        try:
            content = path.read_bytes()
        except FileNotFoundError:
            raise ResticError(
                "password_file",
                _("The backup password file %(file)s does not exist.", file=path),
            ) from None
        except OSError as exc:
            raise ResticError(
                "password_file",
                _(
                    "The backup password file %(file)s cannot be read: %(reason)s",
                    file=path,
                    reason=exc.strerror,
                ),
            ) from None
        if not content.strip():
            raise ResticError(
                "password_file", _("The backup password file %(file)s is empty.", file=path)
            )

    def _argv(self, args: Sequence[str]) -> list[str]:
        return [self.binary, *args]

    def popen(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start restic (for pipes); the caller waits and calls `failure` on a bad exit."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        try:
            return subprocess.Popen(self._argv(args), env=self.env(), **kwargs)
        except FileNotFoundError:
            raise _not_installed() from None

    def run(self, args: Sequence[str], *, stdin: IO[bytes] | int | None = None) -> Result:
        """Run restic to the end; a non-zero exit raises `ResticError`."""
        result = self.run_unchecked(args, stdin=stdin)
        if result.returncode != 0:
            raise self.failure(result.returncode, result.stderr)
        return result

    def run_unchecked(self, args: Sequence[str], *, stdin: IO[bytes] | int | None = None) -> Result:
        try:
            done = subprocess.run(
                self._argv(args),
                env=self.env(),
                stdin=subprocess.DEVNULL if stdin is None else stdin,
                capture_output=True,
                check=False,
            )
        except FileNotFoundError:
            raise _not_installed() from None
        return Result(
            done.returncode,
            done.stdout.decode("utf-8", "replace"),
            done.stderr.decode("utf-8", "replace"),
        )

    def failure(self, returncode: int, stderr: str) -> ResticError:
        return classify(returncode, stderr, self.version, self.repository, self.password_file)

    @cached_property
    def version(self) -> Version:
        try:
            done = subprocess.run(
                self._argv(["version"]), capture_output=True, text=True, check=False
            )
        except FileNotFoundError:
            raise _not_installed() from None
        return Version.parse(done.stdout)

    # --- commands -----------------------------------------------------------------------

    def exists(self) -> bool:
        """``restic cat config``: True when there is an initialised repository."""
        result = self.run_unchecked(["cat", "config"])
        if result.returncode == 0:
            return True
        error = self.failure(result.returncode, result.stderr)
        if error.kind == "missing_repository":
            return False
        raise error

    def init(self) -> str:
        """Create the repository; returns its id."""
        if self.version.init_prints_json:
            out = self.run(["init", "--json"]).stdout
            return str(json.loads(out.strip().splitlines()[-1]).get("id", ""))
        out = self.run(["init"]).stdout  # 0.14 ignores --json here
        match = re.search(r"created restic repository (\w+)", out)
        return match.group(1) if match else ""

    def ensure_repository(self) -> bool:
        """Initialise the repository if there is none; True when it was just created."""
        if self.exists():
            return False
        self.init()
        return True

    @staticmethod
    def _tags(tags: Iterable[str]) -> list[str]:
        return ["--tag", ",".join(tags)]

    def backup(self, paths: Sequence[Path], tags: Sequence[str]) -> dict[str, Any]:
        """Back up files and folders; returns restic's summary (exit 3, unreadable files,
        counts as a failure: such a snapshot is not a whole backup)."""
        args = ["backup", "--json", "--quiet", "--host", HOST, *self._tags(tags)]
        result = self.run([*args, "--", *(str(path) for path in paths)])
        return summary_of(result.stdout)

    def backup_stdin_args(self, filename: str, tags: Sequence[str]) -> list[str]:
        return [
            "backup",
            "--json",
            "--quiet",
            "--host",
            HOST,
            *self._tags(tags),
            "--stdin",
            "--stdin-filename",
            filename,
        ]

    def snapshots(self, tags: Sequence[str] = (), ids: Sequence[str] = ()) -> list[dict[str, Any]]:
        args = ["snapshots", "--json", "--host", HOST]
        if tags:
            args += self._tags(tags)
        found = json.loads(self.run([*args, *ids]).stdout or "[]") or []
        return sorted(found, key=lambda snap: snap.get("time", ""))

    def forget_policy(
        self,
        tags: Sequence[str],
        daily: int,
        weekly: int,
        monthly: int,
        keep_tags: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        """Apply the retention policy to the snapshots having all ``tags`` (those with any
        of ``keep_tags`` are kept); returns restic's groups (``keep``/``remove``).
        Pruning is separate (see `prune`)."""
        args = ["forget", "--json", "--host", HOST, *self._tags(tags)]
        for tag in keep_tags:
            args += ["--keep-tag", tag]
        for flag, value in (
            ("--keep-daily", daily),
            ("--keep-weekly", weekly),
            ("--keep-monthly", monthly),
        ):
            if value > 0:
                args += [flag, str(value)]
        out = self.run(args).stdout.strip()
        return json.loads(out.splitlines()[-1]) if out else []

    def forget(self, snapshot_ids: Sequence[str]) -> None:
        if snapshot_ids:
            self.run(["forget", *snapshot_ids])

    def prune(self) -> None:
        self.run(["prune"])

    def dump_args(self, snapshot_id: str, path: str) -> list[str]:
        return ["dump", snapshot_id, path]

    def dump_bytes(self, snapshot_id: str, path: str) -> bytes:
        try:
            done = subprocess.run(
                self._argv(self.dump_args(snapshot_id, path)),
                env=self.env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                check=False,
            )
        except FileNotFoundError:
            raise _not_installed() from None
        if done.returncode != 0:
            raise self.failure(done.returncode, done.stderr.decode("utf-8", "replace"))
        return done.stdout

    def dump_to_file(self, snapshot_id: str, path: str, target: Path) -> None:
        with target.open("wb") as out:
            process = self.popen(
                self.dump_args(snapshot_id, path), stdout=out, stderr=subprocess.PIPE
            )
            _, err = process.communicate()
        if process.returncode != 0:
            raise self.failure(process.returncode, err.decode("utf-8", "replace"))

    def restore(self, snapshot_id: str, target: Path, includes: Sequence[str] = ()) -> None:
        args = ["restore", snapshot_id, "--target", str(target)]
        for path in includes:
            args += ["--include", path]
        self.run(args)

    def stats(self) -> dict[str, Any]:
        """What the repository holds on disk (``raw-data``: after deduplication)."""
        return dict(json.loads(self.run(["stats", "--json", "--mode", "raw-data"]).stdout))

    def check(self, subset: str) -> str:
        """``restic check --read-data-subset``; 0.14 prints text only, so the exit code
        decides and the last line is kept as the report."""
        result = self.run(["check", f"--read-data-subset={subset}"])
        return _last_lines(result.stdout, 1)


def summary_of(stdout: str) -> dict[str, Any]:
    """The last ``summary`` message of a JSON-lines stream (status lines are skipped)."""
    summary: dict[str, Any] = {}
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if message.get("message_type") == "summary":
            summary = message
    return summary


def _not_installed() -> ResticError:
    return ResticError(
        "not_installed",
        _(
            "restic is not installed on this server (there is no `restic` command). "
            "Install the restic package."
        ),
    )
