"""Hooks of the telephony plugin."""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any

from core.hookspecs import hookimpl
from core.hooktypes import (
    BackgroundService,
    CardTab,
    KpiMetric,
    MenuItem,
    MetricScope,
    Permission,
    RecordType,
    TimelineKind,
)
from core.i18n import _

VIEW_CALLS = "telephony.calls.view"
LISTEN = "telephony.recordings.listen"
SETTINGS = "telephony.settings"


@hookimpl
def piccolo_apps() -> list[str]:
    return ["plugins.telephony.piccolo_app"]


@hookimpl
def route_handlers() -> list[Any]:
    from plugins.telephony import click_to_call, routes

    return [*routes.HANDLERS, *click_to_call.HANDLERS]


@hookimpl
def phone_actions() -> list[Any]:
    from plugins.telephony import click_to_call

    return [click_to_call.phone_action()]


@hookimpl
def permissions() -> list[Permission]:
    from plugins.telephony import click_to_call

    return [
        click_to_call.permission(),
        Permission(
            VIEW_CALLS, _("See calls (journal and client cards)"), ("admin", "head", "manager")
        ),
        Permission(LISTEN, _("Listen to call recordings"), ("admin", "head")),
        Permission(SETTINGS, _("Set up the PBX connection"), ("admin",)),
    ]


@hookimpl
def record_types() -> list[RecordType]:
    return [RecordType("telephony.call", _("Calls"))]


@hookimpl
def menu_items(user: Any) -> list[MenuItem]:
    return [
        MenuItem(label=_("Calls"), href="/p/telephony/journal", order=45, permission=VIEW_CALLS),
        MenuItem(
            label=_("Telephony"), href="/p/telephony/settings", order=940, permission=SETTINGS
        ),
    ]


@hookimpl
def card_tabs(entity: str, record: dict[str, Any]) -> list[CardTab]:
    from core import access

    if entity != "client" or not access.current().can(VIEW_CALLS):
        return []
    return [
        CardTab(key="calls", label=_("Calls"), url=f"/p/telephony/clients/{record['id']}/calls")
    ]


@hookimpl
def timeline_kinds() -> list[TimelineKind]:
    return [TimelineKind("telephony.call", "telephony/timeline_call.html", _("Call"), "☎")]


@hookimpl
def background_services() -> list[BackgroundService]:
    from plugins.telephony.service import run_ami_service

    return [BackgroundService(name="telephony.ami", run=run_ami_service)]


def _period(start: date, end: date) -> tuple[datetime, datetime]:
    from core.services.tasks import install_zone

    zone = install_zone()
    return datetime.combine(start, time(0), zone), datetime.combine(end, time(0), zone)


async def _calls(start: date, end: date, scope: MetricScope, condition: Any, value: Any) -> float:
    """Sum or count over ended calls started in [start, end) by the scope's users."""
    from piccolo.query.functions.aggregate import Count, Sum

    from plugins.telephony.tables import TelephonyCall

    first, last = _period(start, end)
    aggregate = Count() if value is None else Sum(value)
    query = TelephonyCall.select(aggregate.as_alias("value")).where(
        (TelephonyCall.state == "ended")
        & (TelephonyCall.started_at >= first)
        & (TelephonyCall.started_at < last)
        & condition
    )
    if scope.user_ids is not None:
        query = query.where(TelephonyCall.user.is_in(list(scope.user_ids) or [0]))
    row = await query.first()
    return float((row or {}).get("value") or 0)


async def _calls_made(start: date, end: date, scope: MetricScope) -> float:
    from plugins.telephony.tables import TelephonyCall

    return await _calls(start, end, scope, TelephonyCall.direction == "outbound", None)


async def _talk_minutes(start: date, end: date, scope: MetricScope) -> float:
    from plugins.telephony.tables import TelephonyCall

    seconds = await _calls(
        start, end, scope, TelephonyCall.direction != "internal", TelephonyCall.talk_seconds
    )
    return round(seconds / 60, 1)


async def _missed(start: date, end: date, scope: MetricScope) -> float:
    from plugins.telephony.tables import TelephonyCall

    return await _calls(start, end, scope, TelephonyCall.result == "missed", None)


@hookimpl
def kpi_metrics() -> list[KpiMetric]:
    return [
        KpiMetric(
            key="telephony.calls_made", label=_("Calls made"), unit="calls", compute=_calls_made
        ),
        KpiMetric(
            key="telephony.talk_time", label=_("Talk time"), unit="min", compute=_talk_minutes
        ),
        KpiMetric(key="telephony.missed", label=_("Missed calls"), unit="calls", compute=_missed),
    ]
