"""Mass mailings: a segment of 500 clients through the real relay, per-recipient
statuses, the public unsubscribe link that sticks, visibility of the author, pace,
and a sending process killed mid-mailing that resumes without a duplicate."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

from litestar.testing import AsyncTestClient

from core.services.common import utcnow
from core.tables import Client, ClientTag, ContactPoint
from plugins.mail.outgoing import mailings, unsubscribe
from plugins.mail.outgoing.tables import (
    DONE,
    FAILED,
    SENT,
    SKIPPED,
    Mailing,
    MailingRecipient,
    MailUnsubscribe,
)
from plugins.mail.tests.test_outgoing import sending_mailbox
from tests.support import csrf_token


async def add_clients(
    count: int, responsible: int, tag: str, *, without_email: int = 0, domain: str = ""
) -> list[dict[str, Any]]:
    """Clients straight into the core tables (500 through the form would be slow)."""
    now = utcnow()
    batch = uuid.uuid4().hex[:6]
    rows = await Client.insert(
        *[
            Client(
                name=f"Client {batch} {i:03d}",
                name_search=f"client {batch} {i:03d}",
                responsible=responsible,
                created_at=now,
                updated_at=now,
                last_activity_at=now,
            )
            for i in range(count)
        ]
    ).returning(Client.id, Client.name)
    await ClientTag.insert(*[ClientTag(client=row["id"], tag=tag) for row in rows])
    domain = domain or f"{batch}.client-test.example.com"
    points = []
    for i, row in enumerate(rows):
        row["email"] = "" if i < without_email else f"c{i:03d}@{domain}"
        if row["email"]:
            points.append(ContactPoint(client=row["id"], kind="email", value=row["email"]))
    await ContactPoint.insert(*points)
    return rows


async def run_until_done(mailing_id: int, limit: float = 120.0) -> str:
    """Play the job: each run sends for a while and hands over, as the queue would."""
    deadline = time.monotonic() + limit
    status = await mailings.run(mailing_id, time_budget=30)
    while status not in (DONE, "paused", "cancelled") and time.monotonic() < deadline:
        status = await mailings.run(mailing_id, time_budget=30)
    return status


def post(client: Any, url: str, data: dict[str, Any] | None = None) -> Any:
    return client.post(
        url, data=data or {}, headers={"x-csrftoken": csrf_token(client)}, follow_redirects=False
    )


async def new_mailing(
    client: Any, mailbox_id: int, tag: str, per_minute: int = 6000, body: str = ""
) -> int:
    response = await post(client, "/p/mail/segments", {"name": f"Tag {tag}", "tag": tag})
    assert response.status_code == 303, response.text
    segment = (await client.get("/p/mail/mailings/new")).text
    segment_id = re.findall(r'<option value="(\d+)">Tag ' + tag, segment)[0]
    response = await post(
        client,
        "/p/mail/mailings",
        {
            "name": f"Spring {tag}",
            "segment": segment_id,
            "mailbox": str(mailbox_id),
            "per_minute": str(per_minute),
            "subject": "Spring offer for {{ client.name }}",
            "body": body
            or "Hello {{ client.name }},\nspring prices.\nUnsubscribe: {{ unsubscribe_url }}",
        },
    )
    assert response.status_code == 303, response.text
    mailing_id = int(response.headers["location"].rsplit("/", 1)[1])
    response = await post(client, f"/p/mail/mailings/{mailing_id}/start")
    assert response.status_code == 303
    return mailing_id


async def statuses(mailing_id: int) -> dict[str, str]:
    rows = await MailingRecipient.select(MailingRecipient.email, MailingRecipient.status).where(
        MailingRecipient.mailing == mailing_id
    )
    return {row["email"]: row["status"] for row in rows}


async def test_mailing_to_500_clients_with_per_recipient_statuses(
    as_admin: Any, admin: dict[str, Any], dovecot: Any, relay: Any
) -> None:
    mailbox = await sending_mailbox(dovecot, relay, admin["id"])
    rows = await add_clients(500, admin["id"], "spring", without_email=5)
    gone = rows[10]["email"]
    await MailUnsubscribe.insert(MailUnsubscribe(email=gone, created_at=utcnow()))

    mailing_id = await new_mailing(as_admin, mailbox["id"], "spring")
    preview = await as_admin.get(f"/p/mail/mailings/{mailing_id}/preview")
    assert "Spring offer for Client" in preview.text
    test = await post(as_admin, f"/p/mail/mailings/{mailing_id}/test")
    assert test.status_code == 303 and "/p/mail/outbox" in test.headers["location"]

    assert await run_until_done(mailing_id) == DONE

    counts = await mailings.counts(mailing_id)
    assert counts == {"sent": 494, "skipped": 6, "total": 500}, counts
    reasons = Counter(
        row["reason"]
        for row in await MailingRecipient.select(MailingRecipient.reason).where(
            (MailingRecipient.mailing == mailing_id) & (MailingRecipient.status == SKIPPED)
        )
    )
    assert reasons == {"no e-mail": 5, "unsubscribed": 1}

    mailing_messages = [r for r in relay.received if "mailing." in r.raw.decode(errors="replace")]
    ids = Counter(re.search(rb"Message-ID: (<[^>]+>)", r.raw).group(1) for r in mailing_messages)
    assert len(ids) == 494 and max(ids.values()) == 1, "every recipient got exactly one"
    assert gone not in {a for r in mailing_messages for a in r.recipients}
    sample = email.message_from_bytes(mailing_messages[0].raw, policy=email.policy.default)
    assert re.fullmatch(r"<http://\S+/p/mail/unsubscribe/\S+>", sample["List-Unsubscribe"])
    assert sample["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    body = sample.get_body(("plain",)).get_content()
    assert re.search(r"Hello Client \w+ \d{3},", body) and "/p/mail/unsubscribe/" in body
    page = await as_admin.get(f"/p/mail/mailings/{mailing_id}")
    assert 'id="count-sent">494<' in page.text


async def test_unsubscribe_link_works_without_login_and_sticks(
    as_admin: Any, admin: dict[str, Any], dovecot: Any, relay: Any, app: Any
) -> None:
    mailbox = await sending_mailbox(dovecot, relay, admin["id"])
    domain = f"{uuid.uuid4().hex[:6]}.client-test.example.com"
    await add_clients(3, admin["id"], "news", domain=domain)
    reader = f"c001@{domain}"
    dovecot.add_user(reader, "reader-pass")

    first = await new_mailing(as_admin, mailbox["id"], "news")
    assert await run_until_done(first) == DONE
    assert set((await statuses(first)).values()) == {SENT}
    # The reader opens the mail in their own mailbox and follows the link.
    from plugins.mail.tests.test_outgoing import fetch_all

    [(_flags, letter)] = fetch_all(dovecot, reader)
    url = re.search(r"<(http[^>]+)>", letter["List-Unsubscribe"]).group(1)
    path = url.split("://", 1)[1].split("/", 1)[1]
    async with AsyncTestClient(app=app) as anonymous:
        page = await anonymous.get("/" + path)
        assert page.status_code == 200 and reader in page.text
        assert not await MailUnsubscribe.exists().where(MailUnsubscribe.email == reader)
        done = await anonymous.post("/" + path, data={"List-Unsubscribe": "One-Click"})
        assert done.status_code == 200 and 'id="unsubscribed"' in done.text
        again = await anonymous.post("/" + path)  # a second click changes nothing
        assert again.status_code == 200
        forged = path.rsplit(".", 1)[0] + ".0000"
        assert (await anonymous.get("/" + forged)).status_code == 404
    assert await MailUnsubscribe.count().where(MailUnsubscribe.email == reader) == 1

    relay.reset()
    second = await new_mailing(as_admin, mailbox["id"], "news")
    assert await run_until_done(second) == DONE
    assert (await statuses(second))[reader] == SKIPPED
    assert relay.messages_to(reader) == []
    assert len(relay.received) == 2


def test_tokens_are_signed() -> None:
    token = unsubscribe.make_token("a@b.example.com", 7)
    assert unsubscribe.read_token(token) == unsubscribe.Subscription("a@b.example.com", 7)
    assert unsubscribe.read_token(token[:-1] + ("0" if token[-1] != "0" else "1")) is None
    assert unsubscribe.read_token("garbage") is None


async def test_a_managers_mailing_reaches_only_clients_they_see(
    client: Any, manager: dict[str, Any], admin: dict[str, Any], dovecot: Any, relay: Any
) -> None:
    from core.services import users
    from tests.support import login

    other = await users.create_user("bob", "Bob Other", "bob-password", role="manager")
    mine = await add_clients(4, manager["id"], "expo")
    theirs = await add_clients(4, other["id"], "expo")
    mailbox = await sending_mailbox(dovecot, relay, manager["id"])
    await login(client, "manager", "manager-password")

    mailing_id = await new_mailing(client, mailbox["id"], "expo")
    assert await run_until_done(mailing_id) == DONE
    reached = {a for r in relay.received for a in r.recipients}
    assert reached == {row["email"] for row in mine}
    assert not reached & {row["email"] for row in theirs}
    assert set(await statuses(mailing_id)) == {row["email"] for row in mine}


async def test_delivery_keeps_the_pace(
    as_admin: Any, admin: dict[str, Any], dovecot: Any, relay: Any
) -> None:
    mailbox = await sending_mailbox(dovecot, relay, admin["id"])
    await add_clients(4, admin["id"], "slow")
    mailing_id = await new_mailing(as_admin, mailbox["id"], "slow", per_minute=120)
    started = time.monotonic()
    assert await run_until_done(mailing_id) == DONE
    assert time.monotonic() - started >= 1.5  # 4 messages, 0.5 s apart
    assert (await mailings.counts(mailing_id))["sent"] == 4


async def test_a_temporary_server_failure_requeues_the_recipient(
    as_admin: Any, admin: dict[str, Any], dovecot: Any, relay: Any
) -> None:
    mailbox = await sending_mailbox(dovecot, relay, admin["id"])
    await add_clients(3, admin["id"], "flaky")
    mailing_id = await new_mailing(as_admin, mailbox["id"], "flaky")
    relay.mode = "tempfail"
    assert await mailings.run(mailing_id, time_budget=30) == "running"
    counts = await mailings.counts(mailing_id)
    assert counts["queued"] == 3 and "sent" not in counts
    relay.mode = "refuse"  # now a permanent refusal: failed with the server's words
    assert await run_until_done(mailing_id) == DONE
    failed = await MailingRecipient.select().where(MailingRecipient.mailing == mailing_id)
    assert {row["status"] for row in failed} == {FAILED}
    assert all("554" in row["reason"] for row in failed)
    progress = await as_admin.get(f"/p/mail/mailings/{mailing_id}/progress")
    assert "554" in progress.text


SENDER = """
import asyncio, sys
from core.runtime import build_runtime, set_runtime
from core.settings import reload_settings
set_runtime(build_runtime(reload_settings()))
from core.db import bind_tables
bind_tables()
from plugins.mail.outgoing import mailings
asyncio.run(mailings.run(int(sys.argv[1]), time_budget=600))
"""


async def test_killed_mid_mailing_resumes_without_duplicates(
    as_admin: Any, admin: dict[str, Any], dovecot: Any, relay: Any, runtime: Any
) -> None:
    mailbox = await sending_mailbox(dovecot, relay, admin["id"])
    await add_clients(300, admin["id"], "crash")
    mailing_id = await new_mailing(as_admin, mailbox["id"], "crash", per_minute=3000)
    env = {
        **os.environ,
        "KARTOTEKA_DATA_DIR": str(runtime.settings.data_dir),
        "DATABASE_URL": runtime.settings.database_url,
        "KARTOTEKA_PLUGINS": "mail",
    }
    process = subprocess.Popen([sys.executable, "-c", SENDER, str(mailing_id)], env=env)
    try:
        deadline = time.monotonic() + 60
        while len(relay.received) < 100 and time.monotonic() < deadline:
            assert process.poll() is None, "the sender died on its own"
            await asyncio.sleep(0.01)
        process.send_signal(signal.SIGKILL)  # mid-batch, at whatever point it is
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    before = len(relay.received)
    assert 100 <= before < 300

    await mailings.settle_interrupted(stale_after=timedelta(0))
    assert await run_until_done(mailing_id) == DONE

    ids = Counter(
        re.search(rb"Message-ID: (<[^>]+>)", r.raw).group(1).decode() for r in relay.received
    )
    assert max(ids.values()) == 1, "no recipient got a message twice"
    rows = await MailingRecipient.select().where(MailingRecipient.mailing == mailing_id)
    by_status = Counter(row["status"] for row in rows)
    interrupted = [row for row in rows if row["status"] == FAILED]
    assert len(interrupted) <= 1 and by_status[SENT] + len(interrupted) == 300, by_status
    for row in rows:
        if row["status"] == SENT:
            assert ids[row["message_id"]] == 1
    # The one claimed when the process died is reported, and was sent at most once.
    for row in interrupted:
        assert "Interrupted" in row["reason"] and ids[row["message_id"]] <= 1
    assert len(ids) == by_status[SENT] + sum(ids[r["message_id"]] for r in interrupted)
    mailing = await Mailing.select().where(Mailing.id == mailing_id).first()
    assert mailing["status"] == DONE


async def test_pause_and_resume_send_each_recipient_once(
    as_admin: Any, admin: dict[str, Any], dovecot: Any, relay: Any
) -> None:
    mailbox = await sending_mailbox(dovecot, relay, admin["id"])
    await add_clients(4, admin["id"], "pause")
    mailing_id = await new_mailing(as_admin, mailbox["id"], "pause", per_minute=60)
    running = asyncio.create_task(mailings.run(mailing_id, time_budget=30))
    while not relay.received:
        await asyncio.sleep(0.05)
    assert (await post(as_admin, f"/p/mail/mailings/{mailing_id}/pause")).status_code == 303
    assert await running == "paused"
    paused_at = len(relay.received)
    assert 1 <= paused_at < 4
    assert (await post(as_admin, f"/p/mail/mailings/{mailing_id}/start")).status_code == 303
    assert await run_until_done(mailing_id) == DONE
    assert len(relay.received) == 4
    assert len({r.recipients[0] for r in relay.received}) == 4


async def test_sweep_restarts_a_mailing_whose_job_was_lost(
    as_admin: Any, admin: dict[str, Any], dovecot: Any, relay: Any, monkeypatch: Any
) -> None:
    mailbox = await sending_mailbox(dovecot, relay, admin["id"])
    await add_clients(2, admin["id"], "lost")
    mailing_id = await new_mailing(as_admin, mailbox["id"], "lost")
    sent: list[int] = []
    monkeypatch.setattr(mailings, "enqueue", lambda mid, delay=None: sent.append(mid))
    await mailings.sweep()
    assert sent == []  # just started: its job may simply be waiting
    await Mailing.update({Mailing.started_at: utcnow() - timedelta(minutes=10)}).where(
        Mailing.id == mailing_id
    )
    await mailings.sweep()
    assert sent == [mailing_id]
