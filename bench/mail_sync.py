"""Mail sync at scale: the first sync of a 20,000-message mailbox, then how long a new
message takes to reach the client's card.

A private Dovecot (plugins/mail/tests/dovecot.py) gets a mailbox of realistic mail
written straight into its maildir (18,000 in INBOX, 2,000 in Sent; text + HTML, a
fifth in threads, one in twenty with a 20-400 KB attachment, 500 client companies
with corporate domains plus free-mail and newsletter senders). Dovecot indexes the
maildir before the clock starts (a real server has its index already). Then:

* first sync: ``sync_mailbox`` over everything, batches of 50 (as the job runs it);
* PostgreSQL runs with a connection pool, as the web and service processes do
  (``--no-pool``: a new connection for every query outside a transaction);
* incremental: N times, APPEND one message and time until it is stored and linked
  to its client (one sync run, what the minute job does; the minute tick itself adds
  0-60 s of waiting on top, see docs/mail.md).

    .venv/bin/python -m bench.mail_sync                         # SQLite in a temp dir
    .venv/bin/python -m bench.mail_sync --engine postgresql     # kartoteka_mail_bench
    .venv/bin/python -m bench.mail_sync --messages 2000 --incremental 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime

PG_URL = "postgresql://postgres@127.0.0.1:5432/kartoteka_mail_bench"
WORDS = [
    "счёт",
    "договор",
    "поставка",
    "оплата",
    "акт",
    "сверки",
    "доставка",
    "заказ",
    "коммерческое",
    "предложение",
    "скидка",
    "invoice",
    "contract",
    "delivery",
    "order",
    "price",
    "list",
    "meeting",
    "call",
    "schedule",
    "update",
]
FREE = ("gmail.com", "mail.ru", "yandex.ru", "bk.ru", "outlook.com")


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def generate(
    n: int, rng: random.Random, domains: list[str], me: str, sent_share: float = 0.1
) -> tuple[list[bytes], list[bytes]]:
    """(inbox, sent) raw messages; dates over the last year, oldest first."""
    inbox: list[bytes] = []
    sent: list[bytes] = []
    start = datetime.now(UTC) - timedelta(days=365)
    previous: list[str] = []
    for i in range(n):
        msg = EmailMessage()
        roll = rng.random()
        if roll < 0.8:
            other = f"{rng.choice(['ivan', 'olga', 'info', 'sales', 'buh'])}@{rng.choice(domains)}"
        elif roll < 0.9:
            other = f"user{rng.randrange(10**6)}@{rng.choice(FREE)}"
        else:
            other = f"news@newsletter{rng.randrange(50)}.example"
        outgoing = rng.random() < sent_share
        msg["From"], msg["To"] = (me, other) if outgoing else (other, me)
        msg["Subject"] = _text(rng, rng.randint(2, 6))
        msg["Date"] = format_datetime(start + timedelta(seconds=i * 365 * 86400 // n))
        message_id = f"<{uuid.UUID(int=rng.getrandbits(128)).hex}@bench.example>"
        msg["Message-ID"] = message_id
        if previous and rng.random() < 0.2:
            parent = rng.choice(previous[-50:])
            msg["In-Reply-To"], msg["References"] = parent, parent
        previous.append(message_id)
        body = "\n\n".join(_text(rng, rng.randint(20, 80)) for _ in range(rng.randint(1, 4)))
        msg.set_content(body)
        msg.add_alternative(
            f"<html><body><p>{body.replace(chr(10), '<br>')}</p></body></html>", subtype="html"
        )
        if rng.random() < 0.05:
            size = rng.randint(20, 400) * 1024
            msg.add_attachment(
                rng.randbytes(size), maintype="application", subtype="pdf", filename=f"doc{i}.pdf"
            )
        (sent if outgoing else inbox).append(msg.as_bytes())
    return inbox, sent


async def _prepare_database(engine: str, pool: bool) -> None:
    if engine == "postgresql":
        import asyncpg

        conn = await asyncpg.connect(PG_URL.rsplit("/", 1)[0] + "/postgres")
        try:
            await conn.execute("DROP DATABASE IF EXISTS kartoteka_mail_bench")
            await conn.execute("CREATE DATABASE kartoteka_mail_bench")
        finally:
            await conn.close()
    from core.db import bind_tables, migrate, start_pool

    bind_tables()
    await migrate()
    if engine == "postgresql" and pool:  # as the web and service processes run
        await start_pool()


async def run(args: argparse.Namespace, out: Callable[[str], None]) -> None:
    from core import access
    from core.sealed import seal
    from core.services import users
    from core.services.clients import create_client
    from core.services.common import utcnow
    from core.services.roles import sync_roles
    from plugins.mail.parsing import message_key
    from plugins.mail.sync.engine import sync_mailbox
    from plugins.mail.tables import Mailbox, MailMessage, MailMessageClient
    from plugins.mail.tests.dovecot import Dovecot

    await _prepare_database(args.engine, not args.no_pool)
    await sync_roles()
    rng = random.Random(args.seed)
    owner = await users.create_user("bench_mail", "Mail Bench", "bench-password", role="manager")
    domains = [f"company{i}.ru" for i in range(args.clients)]
    with access.acting_as(access.SYSTEM):
        for i, domain in enumerate(domains):
            await create_client(
                {
                    "name": f"ООО Компания {i}",
                    "responsible": owner["id"],
                    "emails": f"info@{domain}",
                },
                owner["id"],
            )
    server = Dovecot.start()
    try:
        login = server.add_user()
        started = time.perf_counter()
        inbox, sent = generate(args.messages, rng, domains, login)
        server.write_maildir(login, inbox)
        server.write_maildir(login, sent, folder="Sent")
        total_bytes = sum(map(len, inbox)) + sum(map(len, sent))
        out(
            f"generated {len(inbox)} inbox + {len(sent)} sent messages, "
            f"{total_bytes / 2**20:.0f} MB, in {time.perf_counter() - started:.1f} s"
        )
        started = time.perf_counter()
        conn = server.connect(login)
        for folder in ('"INBOX"', '"Sent"'):
            conn.select(folder, readonly=True)
        conn.logout()
        out(f"dovecot indexed the maildir in {time.perf_counter() - started:.1f} s (not counted)")

        rows = await Mailbox.insert(
            Mailbox(
                name="bench",
                email=login,
                kind="personal",
                owner=owner["id"],
                imap_host=server.host,
                imap_port=server.port,
                imap_security="none",
                imap_user=login,
                imap_password_sealed=seal(server.users[login]),
                created_at=utcnow(),
            )
        ).returning(Mailbox.id)
        mailbox_id = int(rows[0]["id"])

        started = time.perf_counter()
        report = await sync_mailbox(mailbox_id, batch_size=args.batch)
        elapsed = time.perf_counter() - started
        stored = await MailMessage.count()
        linked = await MailMessageClient.count()
        out(
            f"first sync: {stored} messages stored ({report.folders}), {linked} client links, "
            f"{elapsed:.1f} s = {stored / elapsed:.0f} messages/s "
            f"({total_bytes / 2**20 / elapsed:.1f} MB/s), batches of {args.batch}"
        )
        started = time.perf_counter()
        again = await sync_mailbox(mailbox_id)
        out(
            f"re-sync with nothing new: {time.perf_counter() - started:.3f} s, stored {again.stored}"
        )

        latencies: list[float] = []
        for i in range(args.incremental):
            raw_id = f"<incremental-{i}-{uuid.uuid4().hex}@bench.example>"
            msg = EmailMessage()
            msg["From"], msg["To"] = f"ivan@{domains[i % len(domains)]}", login
            msg["Subject"], msg["Message-ID"] = f"incremental {i}", raw_id
            msg.set_content(_text(rng, 40))
            server.deliver(login, msg.as_bytes())
            started = time.perf_counter()
            await sync_mailbox(mailbox_id)
            row = (
                await MailMessage.select(MailMessage.id)
                .where(MailMessage.message_key == message_key(raw_id))
                .first()
            )
            on_card = row and await MailMessageClient.exists().where(
                MailMessageClient.message == row["id"]
            )
            latencies.append(time.perf_counter() - started)
            if not on_card:
                raise SystemExit(f"incremental message {i} did not reach the client's card")
        ordered = sorted(latencies)
        out(
            f"incremental (deliver one, sync, on the card), n={len(ordered)}: "
            f"p50={statistics.median(ordered) * 1000:.0f} ms  "
            f"p95={ordered[max(0, int(len(ordered) * 0.95) - 1)] * 1000:.0f} ms  "
            f"max={ordered[-1] * 1000:.0f} ms (+ up to 60 s until the minute job runs)"
        )
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out(f"peak RSS of the sync process: {rss:.0f} MB")
    finally:
        server.stop()


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--incremental", type=int, default=20)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--no-pool", action="store_true", help="PostgreSQL: a connection per query")
    args = parser.parse_args(argv)
    data_dir = tempfile.mkdtemp(prefix="kartoteka-bench-mail-")
    os.environ["KARTOTEKA_DATA_DIR"] = data_dir
    os.environ["KARTOTEKA_PLUGINS"] = "mail"
    os.environ["DATABASE_URL"] = PG_URL if args.engine == "postgresql" else ""
    pooled = ", no pool" if args.engine == "postgresql" and args.no_pool else ""
    out(f"mail sync benchmark, {args.engine}{pooled}, {args.messages} messages")
    try:
        asyncio.run(run(args, out))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
