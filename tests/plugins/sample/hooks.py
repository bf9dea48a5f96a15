"""Implements every hook of core/hookspecs.py; tests/test_hooks.py checks each one."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path
from typing import Any

from litestar import Request, get, post
from litestar.params import FromPath
from litestar.response import Template

from core import access
from core.access import PUBLIC, needs
from core.hookspecs import hookimpl
from core.hooktypes import (
    BackgroundService,
    BackupItem,
    CardTab,
    DashboardWidget,
    DataFormat,
    KpiMetric,
    MenuItem,
    MetricScope,
    Permission,
    PhoneAction,
    RecordType,
    ScheduledJob,
    TimelineKind,
)

RECEIVED_EVENTS: list[Any] = []
SERVICE_LOG: list[str] = []
SPECIAL_PHONE = "+74950000000"


@get("/hello", opt=needs("core.clients.view"))
async def hello(request: Request) -> Template:
    return Template("sample/hello.html", context={"user": request.scope["user"]})


@post("/hook", opt={**PUBLIC, "exclude_from_csrf": True}, status_code=200)
async def public_hook() -> dict[str, bool]:
    return {"ok": True}


@get("/clients/{client_id:int}/tab", opt=needs("core.clients.view"))
async def client_tab(client_id: FromPath[int]) -> str:
    """Shows how a plugin tab respects visibility without re-implementing it."""
    from core.services.clients import get_client
    from tests.plugins.sample.tables import SampleMark

    await get_client(client_id)  # 404 unless the current user may see the client
    query = SampleMark.select(SampleMark.label).where(SampleMark.client == client_id)
    visible = access.current().client_filter("sample.mark", SampleMark.client)
    if visible is not None:
        query = query.where(visible)
    labels = [row["label"] for row in await query.order_by(SampleMark.label)]
    return f"sample tab of {client_id}" + "".join(f"; {label}" for label in labels)


@hookimpl
def piccolo_apps() -> list[str]:
    return ["tests.plugins.sample.piccolo_app"]


@post("/sms", opt=needs("core.clients.view"), status_code=200)
async def send_sms(request: Request) -> str:
    """A phone action's route: the number arrives as the form field ``number``."""
    number = (await request.form()).get("number", "")
    return f"SMS to {number} queued"


@hookimpl
def route_handlers() -> list[Any]:
    return [hello, public_hook, client_tab, send_sms]


@hookimpl
def menu_items(user: dict[str, Any]) -> list[MenuItem]:
    return [
        MenuItem(label="Sample", href="/p/sample/hello", order=50),
        MenuItem(label="Sample admin", href="/p/sample/admin", order=51, permission="sample.admin"),
    ]


@hookimpl
def card_tabs(entity: str, record: dict[str, Any]) -> list[CardTab]:
    if entity != "client":
        return []
    return [
        CardTab(key="sample", label="Sample tab", url=f"/p/sample/clients/{record['id']}/tab"),
        CardTab(
            key="sample-panel",
            label="Sample panel",
            url=f"/p/sample/clients/{record['id']}/tab",
            placement="panel",
        ),
    ]


@hookimpl
def timeline_kinds() -> list[TimelineKind]:
    return [
        TimelineKind(
            kind="sample.ping", template="sample/timeline_ping.html", label="Ping", icon="!"
        )
    ]


@hookimpl
def domain_event(event: Any) -> None:
    RECEIVED_EVENTS.append(event)


def _noop_actor() -> None:
    """Stands in for a Dramatiq actor: the scheduler only calls ``.send``."""


_noop_actor.send = lambda **kwargs: None  # type: ignore[attr-defined]


@hookimpl
def scheduled_jobs() -> list[ScheduledJob]:
    return [ScheduledJob(name="sample.tick", cron="*/5 * * * *", actor=_noop_actor)]


@hookimpl
def permissions() -> list[Permission]:
    return [Permission("sample.admin", "Administer the sample", ("admin", "head"))]


@hookimpl
def record_types() -> list[RecordType]:
    return [
        RecordType(
            "sample.mark",
            "Sample marks",
            hideable_fields=(("sample.mark.label", "Mark labels"),),
            default_scopes={"head": "all"},
        )
    ]


@hookimpl
def dashboard_widgets(user: dict[str, Any]) -> list[DashboardWidget]:
    return [DashboardWidget(key="sample", title="Sample widget", url="/p/sample/hello")]


async def _count_marks(start: date, end: date, scope: MetricScope) -> float:
    return 42.0


@hookimpl
def kpi_metrics() -> list[KpiMetric]:
    return [KpiMetric(key="sample.marks", label="Marks", unit="pcs", compute=_count_marks)]


@hookimpl(tryfirst=True)
async def lookup_client(phone: str | None) -> int | None:
    from core.tables import Client

    if phone != SPECIAL_PHONE:
        return None
    row = await Client.select(Client.id).order_by(Client.id).first()
    return row["id"] if row else None


@hookimpl
def data_formats() -> list[DataFormat]:
    return [
        DataFormat(
            key="sample.lines",
            label="Lines",
            entity="client",
            media_type="text/plain",
            extension="txt",
            exporter=lambda rows: "\n".join(r["name"] for r in rows).encode(),
            importer=lambda data: [{"name": line} for line in data.decode().splitlines() if line],
        )
    ]


@hookimpl
def jinja_environment(env: Any) -> None:
    env.filters["shout"] = lambda value: f"{value}!".upper()


@hookimpl
def backup_items() -> list[BackupItem]:
    return [BackupItem(name="sample", path=Path("/tmp/sample-backup-item"))]


async def _keep_listening() -> None:
    """Stands in for a PBX connection: runs until the owner cancels it."""
    SERVICE_LOG.append("started")
    try:
        await asyncio.Event().wait()
    finally:
        SERVICE_LOG.append("stopped")


@hookimpl
def background_services() -> list[BackgroundService]:
    return [BackgroundService(name="sample.listener", run=_keep_listening)]


@hookimpl
def phone_actions() -> list[PhoneAction]:
    return [
        PhoneAction(
            key="sample.sms",
            label="Send a sample SMS",
            url="/p/sample/sms",
            icon="✉",
            permission="core.clients.view",
            pending="Sending…",
        ),
        PhoneAction(
            key="sample.admin", label="Admin only", url="/p/sample/sms", permission="sample.admin"
        ),
    ]
