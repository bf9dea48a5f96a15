"""CSV and Excel exports of the lists, within each role's limits.

Each export route takes the query parameters of its list page plus ``format``
(csv or xlsx), so "export what I see" is the list URL with ``/export`` added.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterable
from typing import IO, Annotated, Any
from urllib.parse import urlencode

from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.exceptions import PermissionDeniedException
from litestar.params import FromQuery, QueryParameter
from litestar.response import Stream

from core import access
from core.access import needs
from core.default_hooks import AUDIT, EXPORT
from core.i18n import _
from core.services import clients, deals, exports, tasks, users
from core.services.clients import ClientQuery
from core.services.common import NotFound
from core.services.deals import DealQuery
from core.services.exports import Column, ExportRefused
from core.validation import ValidationError
from core.web.controllers.audit_log import parse_query
from core.web.controllers.base import current_user, is_htmx, render
from core.web.controllers.queries import CLIENT_QUERY, DEAL_QUERY

Format = Annotated[str, QueryParameter(name="format")]
CHUNK = 64 * 1024


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "").split(",")[0]


def _list_url(request: Request, path: str) -> str:
    """The list page the export came from, with the same filters."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "format"]
    return f"{path}?{urlencode(params)}" if params else path


async def _chunks(content: IO[bytes]) -> AsyncIterator[bytes]:
    try:
        while chunk := content.read(CHUNK):
            yield chunk
    finally:
        content.close()


async def _send(
    request: Request,
    list_path: str,
    object_type: str,
    columns: list[Column],
    rows: Any,
    fmt: str,
    description: Iterable[tuple[str, Any]],
) -> Response[Any]:
    if fmt not in exports.FORMATS:
        raise ValidationError({"format": _("Choose one of the offered values.")})
    if is_htmx(request):
        # htmx sent the filter form's current values: let the browser download from that URL
        url = f"{request.url.path}?{request.url.query}"
        return Response(b"", status_code=200, headers={"HX-Redirect": url})
    try:
        file = await exports.export(object_type, columns, rows, fmt, exports.describe(description))
    except ExportRefused as refused:
        if _wants_json(request):
            return Response({"detail": refused.message}, status_code=refused.status_code)
        return render(
            request,
            "core/exports/refused.html",
            status_code=refused.status_code,
            status=refused.status_code,
            title=_("Export refused"),
            message=refused.message,
            back_url=_list_url(request, list_path),
        )
    return Stream(
        _chunks(file.content),
        media_type=file.media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{file.filename}"',
            "Cache-Control": "no-store",
        },
    )


async def _user_name(user_id: int | None) -> str:
    if not user_id:
        return ""
    try:
        return str((await users.get_user(user_id))["full_name"])
    except NotFound:
        return f"#{user_id}"


@get("/clients/export", opt=needs(EXPORT), dependencies=CLIENT_QUERY)
async def client_export(
    request: Request, filters: NamedDependency[ClientQuery], fmt: Format = "csv"
) -> Response[Any]:
    query = dataclasses.replace(filters, cursor="")
    description = [
        (_("Search"), query.search),
        (_("Manager"), await _user_name(query.responsible)),
        (_("Tag"), query.tag),
        (_("Source"), query.source),
    ]
    return await _send(
        request,
        "/clients",
        "clients",
        exports.client_columns(),
        exports.client_rows(query),
        fmt,
        description,
    )


async def _deal_names(query: DealQuery) -> dict[str, str]:
    names: dict[str, str] = {}
    for pipeline in await deals.list_pipelines(include_archived=True):
        if pipeline["id"] == query.pipeline:
            names["pipeline"] = pipeline["name"]
        for stage in pipeline["stages"]:
            if stage["id"] == query.stage:
                names["stage"] = stage["name"]
    if query.client:
        try:
            names["client"] = (await clients.get_client(query.client))["name"]
        except NotFound:
            names["client"] = f"#{query.client}"
    return names


@get("/deals/export", opt=needs(EXPORT), dependencies=DEAL_QUERY)
async def deal_export(
    request: Request, filters: NamedDependency[DealQuery], fmt: Format = "csv"
) -> Response[Any]:
    query = dataclasses.replace(filters, cursor="")
    pipeline, stage = query.pipeline, query.stage
    names = await _deal_names(query)
    description = [
        (_("Search"), query.search),
        (_("Pipeline"), names.get("pipeline") or (pipeline and f"#{pipeline}")),
        (_("Stage"), names.get("stage") or (stage and f"#{stage}")),
        (_("Manager"), await _user_name(query.responsible)),
        (_("Client"), names.get("client")),
        (_("Status"), exports.status_labels().get(query.status)),
    ]
    return await _send(
        request,
        "/deals/list",
        "deals",
        exports.deal_columns(),
        exports.deal_rows(query),
        fmt,
        description,
    )


@get("/tasks/export", opt=needs(EXPORT))
async def task_export(
    request: Request,
    fmt: Format = "csv",
    view: FromQuery[str] = "today",
    assignee: FromQuery[int | None] = None,
) -> Response[Any]:
    who = assignee or current_user(request)["id"]
    if not access.current().sees_owner("task", who):
        raise NotFound(who)
    view = view if view in tasks.VIEWS else "today"
    labels = {
        "today": _("Today"),
        "overdue": _("Overdue"),
        "upcoming": _("Upcoming"),
        "done": _("Done"),
    }
    return await _send(
        request,
        "/tasks",
        "tasks",
        exports.task_columns(),
        exports.task_rows(who, view),
        fmt,
        [(_("Tasks"), labels[view]), (_("Assignee"), await _user_name(who))],
    )


@get("/admin/audit/export", opt=needs(AUDIT))
async def audit_export(request: Request, fmt: Format = "csv") -> Response[Any]:
    if not access.current().can(EXPORT):  # the route needs AUDIT, an export needs EXPORT too
        raise PermissionDeniedException(f"needs the {EXPORT} permission")
    query, errors, values = parse_query(request.query_params)
    if errors:
        raise ValidationError(errors)
    description = [
        (_("User"), await _user_name(query.actor)),
        (_("Action"), query.action),
        (_("Object type"), query.object_type),
        (_("Object id"), query.object_id),
        (_("From"), values["from"]),
        (_("To"), values["to"]),
        (_("Flagged only"), query.flagged and _("yes")),
    ]
    query.cursor = ""
    return await _send(
        request,
        "/admin/audit",
        "audit",
        exports.audit_columns(),
        exports.audit_rows(query),
        fmt,
        description,
    )


HANDLERS: list[Any] = [client_export, deal_export, task_export, audit_export]
