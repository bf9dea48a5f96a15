"""Background jobs: Dramatiq actors, the install's broker, the worker and scheduler.

Plugins and the core declare actors with `core.jobs.actor` rather than
``dramatiq.actor``: it binds them to the install's broker whatever the import order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dramatiq

from core.jobs.broker import get_job_broker, setup_broker

DEFAULT_OPTIONS: dict[str, Any] = {
    "max_retries": 5,
    # Milliseconds. Dramatiq's own default is 10 minutes; a job that long is better
    # split up. Slow jobs (backups) ask for more explicitly.
    "time_limit": 5 * 60 * 1000,
}


def actor(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Declare a Dramatiq actor on the install's broker.

    Usable bare (``@actor``) or with options (``@actor(queue_name="mail")``). The
    actor is named ``<module>.<function>`` unless ``actor_name`` is given, so two
    plugins may both have a ``sync`` job without clashing.
    """

    def decorate(func: Callable[..., Any]) -> dramatiq.Actor:
        merged = {**DEFAULT_OPTIONS, **options}
        merged.setdefault("actor_name", f"{func.__module__}.{func.__qualname__}")
        return dramatiq.actor(broker=get_job_broker(), **merged)(func)

    return decorate(fn) if fn is not None else decorate


__all__ = ["DEFAULT_OPTIONS", "actor", "get_job_broker", "setup_broker"]
