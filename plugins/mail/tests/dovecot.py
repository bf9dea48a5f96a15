"""A private Dovecot IMAP server for the tests and the benchmark.

Its own configuration, passwd-file and maildirs live in a temporary directory; it
listens on 127.0.0.1 on a free high port, runs in the foreground as a child process
(no systemd, no system configuration touched) and is stopped by ``stop()``. Install
the binary with ``scripts/system-deps.sh`` (Debian package ``dovecot-imapd``).

Helpers put mail in a user's mailbox the way a real delivery does: ``deliver`` APPENDs
over IMAP as that user (the message stays unseen), ``write_maildir`` drops files
straight into the maildir for bulk loads (the benchmark's 20,000 messages).
"""

from __future__ import annotations

import grp
import imaplib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

POOL_SIZE = 500
POOL_PASSWORD = "secret"
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"

CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{root}/cert.pem
ssl_key = <{root}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{root}/mail/%u
first_valid_uid = {uid}
last_valid_uid = 0
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
mail_uid = {uid}
mail_gid = {gid}
imap_max_line_length = 1M
mail_max_userip_connections = 100
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
  mailbox Drafts {{
    special_use = \\Drafts
    auto = subscribe
  }}
  mailbox Trash {{
    special_use = \\Trash
    auto = subscribe
  }}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {ssl_port}
  }}
}}
service anvil {{
  chroot =
}}
service stats {{
  unix_listener stats-reader {{
    user = {internal_user}
  }}
  unix_listener stats-writer {{
    user = {internal_user}
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Dovecot:
    """A running private Dovecot; ``add_user`` creates mailboxes on the fly."""

    root: Path
    port: int
    ssl_port: int = 0
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = None
    users: dict[str, str] = field(default_factory=dict)
    _pool: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, root: Path | None = None) -> Dovecot:
        if not Path(DOVECOT).exists():
            raise RuntimeError("dovecot is not installed: run scripts/system-deps.sh")
        root = Path(root or tempfile.mkdtemp(prefix="kartoteka-dovecot-"))
        root.chmod(0o711)  # the auth process (another user when run as root) reads passwd
        for sub in ("run", "state", "mail", "home"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        _chown_tree(root / "mail")
        _chown_tree(root / "home")
        (root / "passwd").write_text("")
        (root / "passwd").chmod(0o644)  # test-only plain passwords
        uid, gid = _mail_owner()
        server = cls(root=root, port=free_port(), ssl_port=free_port())
        # Tests trust cert.pem via SSL_CERT_FILE.
        write_self_signed(root / "cert.pem", root / "key.pem")
        server._pool = [f"u{i:04d}-{uuid.uuid4().hex[:6]}@example.test" for i in range(POOL_SIZE)]
        server._write_users([(login, POOL_PASSWORD) for login in server._pool])
        (root / "dovecot.conf").write_text(
            CONFIG.format(
                root=root,
                port=server.port,
                ssl_port=server.ssl_port,
                uid=uid,
                gid=gid,
                **_process_users(uid, gid),
            )
        )
        server.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(root / "dovecot.conf")],
            stdout=subprocess.DEVNULL,
            stderr=open(root / "stderr.log", "wb"),  # noqa: SIM115 - lives as long as dovecot
        )
        server._wait_listening()
        return server

    def _wait_listening(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited: {self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"dovecot did not start listening: {self.log_tail()}")

    def log_tail(self) -> str:
        text = ""
        for name in ("stderr.log", "dovecot.log"):
            path = self.root / name
            if path.exists():
                text += path.read_text(errors="replace")[-2000:]
        return text

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def add_user(self, name: str | None = None, password: str = "secret") -> str:
        """A mail account (``name@example.test`` style login); returns the login.

        Accounts come from a pool written before Dovecot started: it re-reads the
        passwd-file at most once a second, so a user added later must wait for that.
        """
        if name is None and password == POOL_PASSWORD and self._pool:
            login = self._pool.pop()
        else:
            login = name or f"u{uuid.uuid4().hex[:10]}@example.test"
            self._write_users([(login, password)])
            time.sleep(1.1)
        self.users[login] = password
        return login

    def _write_users(self, users: list[tuple[str, str]]) -> None:
        with (self.root / "passwd").open("a") as passwd:
            passwd.writelines(f"{login}:{{PLAIN}}{password}::::::\n" for login, password in users)

    def connect(self, login: str) -> imaplib.IMAP4:
        conn = imaplib.IMAP4(self.host, self.port, timeout=30)
        conn.login(login, self.users[login])
        return conn

    def deliver(self, login: str, raw: bytes, folder: str = "INBOX", flags: str = "") -> None:
        """Put a raw message into a user's folder (IMAP APPEND, unseen unless flagged)."""
        conn = self.connect(login)
        try:
            typ, data = conn.append(_quote(folder), flags or None, None, raw)
            if typ != "OK":
                raise RuntimeError(f"APPEND failed: {data!r}")
        finally:
            conn.logout()

    def write_maildir(self, login: str, messages: Iterable[bytes], folder: str = "") -> int:
        """Bulk-load messages as maildir files (folder "" is INBOX); Dovecot indexes them."""
        base = self.root / "mail" / login
        target = base / f".{folder}" if folder else base
        for sub in ("cur", "new", "tmp"):
            (target / sub).mkdir(parents=True, exist_ok=True)
        count = 0
        stamp = int(time.time())
        for count, raw in enumerate(messages, start=1):
            (target / "new" / f"{stamp}.M{count}P{os.getpid()}.bench,S={len(raw)}").write_bytes(raw)
        _chown_tree(base)
        return count

    def flags(self, login: str, folder: str = "INBOX") -> list[bytes]:
        """Every message's FLAGS in a folder, read without changing them."""
        conn = self.connect(login)
        try:
            conn.select(_quote(folder), readonly=True)
            typ, data = conn.uid("FETCH", "1:*", "(FLAGS)")
            return [item for item in data if isinstance(item, bytes)] if typ == "OK" else []
        finally:
            conn.logout()


def write_self_signed(cert_path: Path, key_path: Path) -> None:
    """A certificate for 127.0.0.1 and localhost, and its key (the test servers' TLS)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)


def _mail_owner() -> tuple[int, int]:
    """Mail is owned by the current user; Dovecot refuses uid 0, so root uses "dovecot"."""
    if os.getuid() != 0:
        return os.getuid(), os.getgid()
    entry = pwd.getpwnam("dovecot")
    return entry.pw_uid, entry.pw_gid


def _chown_tree(path: Path) -> None:
    if os.getuid() != 0:
        return
    uid, gid = _mail_owner()
    os.chown(path, uid, gid)
    for parent, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(parent, name), uid, gid)


def _process_users(uid: int, gid: int) -> dict[str, str]:
    """Dovecot's helper processes run as the current user, unless that is root: then as
    the unprivileged users the Debian package creates (login processes refuse root)."""
    if os.getuid() == 0:
        return {"internal_user": "dovecot", "internal_group": "dovecot", "login_user": "dovenull"}
    user, group = pwd.getpwuid(uid).pw_name, grp.getgrgid(gid).gr_name
    return {"internal_user": user, "internal_group": group, "login_user": user}


def _quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'
