"""Background jobs: the SQLite broker, broker selection, the scheduler, reminders."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from datetime import timedelta
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.errors import QueueJoinTimeout
from dramatiq.middleware.asyncio import AsyncIO

from core import events
from core.hookspecs import hookimpl
from core.hooktypes import ScheduledJob
from core.jobs import actor, get_job_broker, setup_broker
from core.jobs.broker import JOBS_DB, build_broker
from core.jobs.scheduler import EmbeddedScheduler, ScheduleError, build_schedule
from core.jobs.sqlite_broker import SQLiteBroker
from core.jobs.worker import EmbeddedWorker
from core.runtime import build_runtime
from tests.support import TEST_PLUGIN_PACKAGE

FAST = {"worker_threads": 2, "worker_timeout": 50}


@pytest.fixture(scope="module")
def job_settings(runtime):
    """The suite's install in embedded mode, its job broker set up."""
    settings = dataclasses.replace(runtime.settings, broker_url="")
    setup_broker(settings)
    return settings


@pytest.fixture
def broker(tmp_path):
    broker = SQLiteBroker(tmp_path / "queue.sqlite3")
    yield broker
    broker.close()


def started(broker):
    worker = EmbeddedWorker(broker, **FAST)
    worker.start()
    return worker


# --- SQLiteBroker ----------------------------------------------------------------


def test_worker_processes_messages(broker):
    seen = []

    @dramatiq.actor(broker=broker)
    def add(x, y):
        seen.append(x + y)

    worker = started(broker)
    try:
        add.send(1, 2)
        add.send(3, 4)
        broker.join(add.queue_name, timeout=5000)
    finally:
        worker.stop()
    assert sorted(seen) == [3, 7]
    assert broker._execute("SELECT count(*) FROM jobs") == [(0,)]


def test_queued_taken_and_delayed_messages_survive_restart(tmp_path):
    path = tmp_path / "queue.sqlite3"
    first = SQLiteBroker(path)

    @dramatiq.actor(broker=first, actor_name="record")
    def record_first(value):
        raise AssertionError("the first process never runs a job")

    record_first.send("claimed")
    record_first.send("queued")
    record_first.send_with_options(args=("delayed",), delay=200)
    # The "crash": a message was claimed and never acked, then the process died.
    claimed = next(first.consume("default", prefetch=1, timeout=100))
    assert claimed.args == ("claimed",)
    first.close()

    second = SQLiteBroker(path)
    seen = []

    @dramatiq.actor(broker=second, actor_name="record")
    def record_second(value):
        seen.append(value)

    worker = started(second)
    try:
        second.join("default", timeout=5000)
    finally:
        worker.stop()
        second.close()
    assert sorted(seen) == ["claimed", "delayed", "queued"]


def test_delayed_message_runs_after_its_delay(broker):
    ran_at = []

    @dramatiq.actor(broker=broker)
    def stamp():
        ran_at.append(time.monotonic())

    worker = started(broker)
    try:
        sent_at = time.monotonic()
        stamp.send_with_options(delay=300)
        time.sleep(0.1)
        assert ran_at == []
        broker.join(stamp.queue_name, timeout=5000)
    finally:
        worker.stop()
    assert len(ran_at) == 1
    assert ran_at[0] - sent_at >= 0.3


def test_failed_message_goes_dead_and_join_returns(broker):
    calls = []

    @dramatiq.actor(broker=broker, max_retries=1, min_backoff=10, max_backoff=20)
    def explode():
        calls.append(1)
        raise RuntimeError("boom")

    worker = started(broker)
    try:
        explode.send()
        broker.join(explode.queue_name, timeout=5000)
    finally:
        worker.stop()
    assert len(calls) == 2  # the first attempt and one retry
    assert [m.actor_name for m in broker.dead_messages(explode.queue_name)] == ["explode"]


def test_join_times_out_and_prefetch_limits_claims(broker):
    @dramatiq.actor(broker=broker)
    def noop(n):
        pass

    noop.send(1)
    noop.send(2)
    with pytest.raises(QueueJoinTimeout):
        broker.join(noop.queue_name, timeout=50)

    consumer = broker.consume(noop.queue_name, prefetch=1, timeout=50)
    first = next(consumer)
    assert first.args == (1,)
    assert next(consumer) is None  # its one prefetch slot is taken
    consumer.ack(first)
    second = next(consumer)
    assert second.args == (2,)
    consumer.requeue([second])
    assert next(consumer).args == (2,)


# --- broker selection and the actor decorator -----------------------------------


def test_setup_broker_embedded_is_sqlite_and_idempotent(job_settings):
    broker = setup_broker(job_settings)
    assert isinstance(broker, SQLiteBroker)
    assert broker.path == job_settings.data_dir / JOBS_DB
    assert any(isinstance(m, AsyncIO) for m in broker.middleware)
    assert setup_broker(job_settings) is broker
    assert get_job_broker() is broker
    assert dramatiq.get_broker() is broker


def test_build_broker_picks_rabbitmq_for_amqp(job_settings):
    broker = build_broker(
        dataclasses.replace(job_settings, broker_url="amqp://guest:guest@127.0.0.1:5672/%2F")
    )
    assert isinstance(broker, RabbitmqBroker)  # connects lazily: no server needed


SERVER_BROKER_URL = os.environ.get("KARTOTEKA_TEST_BROKER_URL", "")


@pytest.mark.skipif(not SERVER_BROKER_URL, reason="server mode only (make test-server)")
def test_server_broker_runs_jobs(job_settings):
    """The real Redis or RabbitMQ of `make test-server` carries a job to a worker."""
    from dramatiq.brokers.redis import RedisBroker

    from core.jobs.reminders import send_due_reminders

    expected = RedisBroker if SERVER_BROKER_URL.startswith("redis") else RabbitmqBroker
    embedded = setup_broker(job_settings)
    server_settings = dataclasses.replace(job_settings, broker_url=SERVER_BROKER_URL)
    try:
        broker = setup_broker(server_settings)
        assert isinstance(broker, expected)
        assert setup_broker(server_settings) is broker
        assert send_due_reminders.broker is broker  # declared actors moved along
        seen = []

        @actor(queue_name="kartoteka_test")
        def ping(value):
            seen.append(value)

        broker.flush_all()
        worker = started(broker)
        try:
            ping.send("pong")
            broker.join(ping.queue_name, timeout=5000)
        finally:
            worker.stop()
        assert seen == ["pong"]
    finally:
        restored = setup_broker(job_settings)
    assert isinstance(restored, SQLiteBroker)
    assert restored is not embedded
    assert send_due_reminders.broker is restored


def test_actor_decorator_binds_to_job_broker_with_defaults(job_settings):
    @actor
    def plain():
        pass

    @actor(max_retries=1, queue_name="slow")
    async def tuned():
        pass

    assert plain.broker is get_job_broker()
    assert plain.actor_name.endswith(
        "test_actor_decorator_binds_to_job_broker_with_defaults.<locals>.plain"
    )
    assert plain.options == {"max_retries": 5, "time_limit": 300_000}
    assert tuned.options["max_retries"] == 1
    assert tuned.queue_name == "slow"


# --- scheduler -------------------------------------------------------------------


def test_schedule_comes_from_hooks(runtime, job_settings):
    from core.jobs.reminders import send_due_reminders

    jobs = {job.name: job for job in build_schedule(runtime)}
    assert jobs["core.task_reminders"].actor is send_due_reminders
    assert jobs["core.task_reminders"].cron == "* * * * *"

    scheduler = EmbeddedScheduler(runtime)
    scheduler.start()
    try:
        job = scheduler.scheduler.get_job("core.task_reminders")
        assert job.func == send_due_reminders.send
        assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, 60)
        assert str(job.trigger.timezone) == job_settings.timezone
    finally:
        scheduler.stop()


def test_bad_cron_is_rejected_naming_the_job(job_settings):
    from core.jobs.reminders import send_due_reminders

    class BadPlugin:
        @hookimpl
        def scheduled_jobs(self):
            return [ScheduledJob(name="bad.nightly", cron="61 * * * *", actor=send_due_reminders)]

    runtime = build_runtime(job_settings, extra_plugin_packages=(TEST_PLUGIN_PACKAGE,))
    runtime.plugins.pm.register(BadPlugin(), name="bad")
    with pytest.raises(ScheduleError, match=r"'bad\.nightly'.*'61 \* \* \* \*'"):
        build_schedule(runtime)


# --- reminders -------------------------------------------------------------------


async def make_task(assignee_id, title, due_in, **values):
    from core.services.common import utcnow
    from core.tables import Task

    now = utcnow()
    rows = await Task.insert(
        Task(title=title, due_at=now + due_in, assignee=assignee_id, created_at=now, **values)
    ).returning(Task.id)
    return rows[0]["id"]


@pytest.fixture
async def user_id(migrated, job_settings):
    """A user of its own; its tasks and notifications are removed afterwards."""
    import secrets

    from core.services.common import utcnow
    from core.tables import Notification, Task, User

    rows = await User.insert(
        User(username=secrets.token_hex(4), full_name="U", password_hash="-", created_at=utcnow())
    ).returning(User.id)
    user_id = rows[0]["id"]
    yield user_id
    await Notification.delete().where(Notification.user == user_id)
    await Task.delete().where(Task.assignee == user_id)
    await User.delete().where(User.id == user_id)


@pytest.fixture
def delivered():
    got: list[events.DomainEvent] = []
    events.set_dispatcher(got.append)
    yield got
    events.set_dispatcher(None)


async def test_reminders_are_sent_once_per_due_task(user_id, delivered):
    from core.jobs.reminders import remind_due_tasks
    from core.services.common import utcnow
    from core.tables import Notification

    due = await make_task(user_id, "Call back", timedelta(minutes=-5))
    just_due = await make_task(user_id, "Send offer", timedelta(seconds=-1))
    await make_task(user_id, "Later", timedelta(hours=1))
    await make_task(user_id, "Done", timedelta(hours=-1), done_at=utcnow())
    await make_task(user_id, "Reminded", timedelta(hours=-1), reminded_at=utcnow())

    assert await remind_due_tasks() >= 2  # other tests' due tasks may be reminded too
    assert await remind_due_tasks() == 0

    notes = (
        await Notification.select().where(Notification.user == user_id).order_by(Notification.id)
    )
    assert [(n["kind"], n["text"], n["url"]) for n in notes] == [
        ("task.due", "Call back", f"/tasks/{due}"),
        ("task.due", "Send offer", f"/tasks/{just_due}"),
    ]
    mine = [e for e in delivered if e.assignee_id == user_id]
    assert [(type(e), e.task_id, e.assignee_id) for e in mine] == [
        (events.TaskDue, due, user_id),
        (events.TaskDue, just_due, user_id),
    ]


async def test_reminder_actor_runs_on_embedded_worker(user_id, delivered):
    from core.jobs.reminders import send_due_reminders
    from core.tables import Notification

    task_id = await make_task(user_id, "Via the worker", timedelta(minutes=-1))
    broker = get_job_broker()
    assert send_due_reminders.broker is broker
    worker = started(broker)
    try:
        send_due_reminders.send()
        send_due_reminders.send()
        await asyncio.to_thread(broker.join, send_due_reminders.queue_name, timeout=5000)
    finally:
        worker.stop()
    notes = await Notification.select().where(Notification.url == f"/tasks/{task_id}")
    assert len(notes) == 1
    assert [e.task_id for e in delivered if e.assignee_id == user_id] == [task_id]
    assert broker.dead_messages(send_due_reminders.queue_name) == []


async def test_expired_sessions_are_cleared(db: None, manager: dict[str, Any]) -> None:
    from core.jobs.sessions import delete_expired_sessions
    from core.services import users
    from core.services.common import utcnow
    from core.tables import Session

    current = await users.start_session(manager["id"])
    stale = await users.start_session(manager["id"])
    await Session.update({Session.expires_at: utcnow() - timedelta(minutes=1)}).where(
        Session.token_hash == users._token_hash(stale)
    )
    assert await delete_expired_sessions() == 1
    assert await users.session_identity(current) is not None
    assert await Session.count() == 1


def test_jobs_wait_while_maintenance_is_on(broker, runtime, monkeypatch):
    """A job that comes up during a restore runs after it, not during it, and is not lost."""
    from core import maintenance
    from core.jobs.broker import PauseDuringMaintenance

    monkeypatch.setattr(PauseDuringMaintenance, "RETRY_AFTER_MS", 300)
    broker.add_middleware(PauseDuringMaintenance(runtime.settings.data_dir))
    seen = []

    @dramatiq.actor(broker=broker)
    def touch(value):
        seen.append(value)

    maintenance.enter("restore", "restoring")
    worker = started(broker)
    try:
        touch.send("late")
        time.sleep(1.0)
        assert seen == [], "nothing ran during maintenance"
        maintenance.leave()
        broker.join(touch.queue_name, timeout=5000)
    finally:
        maintenance.leave()
        worker.stop()
    assert seen == ["late"]
