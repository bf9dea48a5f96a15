"""Values that plugins return from hooks.

Plain frozen dataclasses: a plugin builds them, the core reads them. Nothing here
touches the database or the web framework, so plugins can import it cheaply.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class Permission:
    code: str
    """Dotted, prefixed with the plugin name: ``telephony.listen_recordings``."""
    label: str
    default_roles: tuple[str, ...] = ("admin",)


@dataclass(frozen=True)
class RecordType:
    """A kind of record whose visibility a role limits to own / team / all.

    Plugins register the records they attach to a client (calls, e-mails...) so an
    admin sets their scope per role, and can hide their sensitive fields.
    """

    code: str
    """``"client"``, ``"deal"``, ``"task"`` or prefixed by the plugin: ``"telephony.call"``."""
    label: str
    hideable_fields: tuple[tuple[str, str], ...] = ()
    """``(field code, label)`` pairs an admin may hide from a role: ``("deal.amount", ...)``."""
    default_scopes: dict[str, str] = field(default_factory=dict)
    """Scope per built-in role where it differs from admin/readonly all, head team,
    manager own."""


@dataclass(frozen=True)
class MenuItem:
    label: str
    href: str
    order: int = 100
    icon: str = ""
    permission: str | None = None


@dataclass(frozen=True)
class CardTab:
    """A tab (or sidebar panel) on a client or deal card, loaded lazily with htmx."""

    key: str
    label: str
    url: str
    """GET URL returning an HTML fragment; called only when the tab is opened."""
    order: int = 100
    placement: Literal["tab", "panel"] = "tab"
    badge: str | None = None


@dataclass(frozen=True)
class DashboardWidget:
    key: str
    title: str
    url: str
    """GET URL returning the widget's HTML fragment (lazy-loaded)."""
    order: int = 100
    size: Literal["small", "wide"] = "small"


@dataclass(frozen=True)
class TimelineKind:
    """How a timeline entry of one kind is shown on the client card."""

    kind: str
    template: str
    """Jinja template rendered with ``entry`` (a dict with ``payload``) in context."""
    label: str = ""
    icon: str = "•"


@dataclass(frozen=True)
class ScheduledJob:
    name: str
    cron: str
    """Crontab expression in the install's time zone, e.g. ``"*/5 * * * *"``."""
    actor: Any
    """A Dramatiq actor; the scheduler calls ``actor.send(**kwargs)``."""
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricScope:
    """Whose numbers a KPI metric should compute: one user, a set, or everyone."""

    user_ids: tuple[int, ...] | None = None


@dataclass(frozen=True)
class KpiMetric:
    key: str
    label: str
    unit: str
    compute: Callable[[date, date, MetricScope], Awaitable[float]]
    """``await compute(start, end, scope)`` returns the value for the period."""


@dataclass(frozen=True)
class DataFormat:
    key: str
    label: str
    entity: str
    """What it imports/exports: ``"client"``, ``"deal"``, ... ."""
    media_type: str
    exporter: Callable[[list[dict[str, Any]]], bytes] | None = None
    importer: Callable[[bytes], list[dict[str, Any]]] | None = None
    extension: str = ""


@dataclass(frozen=True)
class BackupItem:
    """Something a backup must include besides the database and attachments."""

    name: str
    path: Path


@dataclass(frozen=True)
class BackgroundService:
    """A long-lived task (a PBX or mailbox connection) run by the install's one owner."""

    name: str
    run: Callable[[], Awaitable[None]]
    """``await run()`` works until cancelled; if it raises, it is restarted after a pause."""


@dataclass(frozen=True)
class PhoneAction:
    """A button next to every phone number shown (click-to-call, send an SMS...)."""

    key: str
    label: str
    """Shown as the button's tooltip (and as its text when there is no icon)."""
    url: str
    """POSTed with the form field ``number``; answers an HTML fragment shown by the number."""
    icon: str = ""
    permission: str | None = None
    pending: str = ""
    """Shown next to the number while the request runs ("Ringing your phone…")."""
    order: int = 100
