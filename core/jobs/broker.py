"""Which Dramatiq broker the install uses, set up once per process.

An actor binds to a broker when it is decorated, so the broker must exist before any
module defining actors is imported; `core.jobs.actor` takes care of that by asking
`get_job_broker()`, which sets the broker up on first use.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import dramatiq
from dramatiq.broker import Broker, MessageProxy
from dramatiq.middleware import SkipMessage
from dramatiq.middleware.asyncio import AsyncIO

from core import maintenance
from core.jobs.sqlite_broker import SQLiteBroker
from core.settings import Settings, SettingsError

log = logging.getLogger(__name__)

JOBS_DB = "jobs.sqlite3"

_lock = threading.RLock()
_broker: Broker | None = None
_broker_key: str | None = None


def _key(settings: Settings) -> str:
    return settings.broker_url or f"sqlite:///{settings.data_dir / JOBS_DB}"


def _safe(url: str | None) -> str:
    """The URL without its password, for logs."""
    if not url or "@" not in url:
        return url or ""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


def build_broker(settings: Settings) -> Broker:
    """A new broker for the settings; does not touch the process-wide one."""
    url = settings.broker_url
    broker: Broker
    if not url:
        broker = SQLiteBroker(settings.data_dir / JOBS_DB)
    elif url.startswith(("redis://", "rediss://")):
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(url=url)
    elif url.startswith(("amqp://", "amqps://")):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        broker = RabbitmqBroker(url=url)
    else:
        raise SettingsError(f"BROKER_URL {url!r}: expected redis://, rediss:// or amqp://")
    broker.add_middleware(AsyncIO())  # lets actors be `async def`
    broker.add_middleware(PauseDuringMaintenance(settings.data_dir))
    return broker


class PauseDuringMaintenance(dramatiq.Middleware):
    """No job touches the database while a restore or an upgrade replaces it: a job that
    comes up then is put back on its queue for later instead of running (or being lost)."""

    RETRY_AFTER_MS = 30_000

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        if maintenance.current(self.data_dir) is None:
            return
        broker.enqueue(message.copy(), delay=self.RETRY_AFTER_MS)
        raise SkipMessage()


def setup_broker(settings: Settings) -> Broker:
    """The process-wide broker for these settings, created on the first call.

    Asked again with a different broker URL or data dir (tests do that), it replaces
    the broker and moves the actors already declared over to the new one, since they
    would otherwise keep sending to the old one. The old broker is left open: whoever
    still holds it (a running worker) closes it.
    """
    global _broker, _broker_key
    key = _key(settings)
    with _lock:
        if _broker is not None and _broker_key == key:
            return _broker
        broker = build_broker(settings)
        old = _broker
        if old is not None:
            log.info("job broker replaced: %s -> %s", _safe(_broker_key), _safe(key))
            for declared in list(old.actors.values()):
                declared.broker = broker
                broker.declare_actor(declared)
        _broker, _broker_key = broker, key
        dramatiq.set_broker(broker)
        return broker


def get_job_broker() -> Broker:
    """The broker actors bind to; set up from the current settings if need be."""
    with _lock:
        if _broker is not None:
            return _broker
        return setup_broker(_current_settings())


def _current_settings() -> Settings:
    # Not get_runtime(): building the runtime imports the plugins' hook modules, which
    # may define actors and so land back here before the runtime exists.
    from core import runtime
    from core.settings import get_settings

    current = runtime._current
    return current.settings if current is not None else get_settings()
