"""The audit log browser. Read-only by design: there is no route that changes an entry."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from litestar import Request, get
from litestar.response import Template

from core.access import needs
from core.default_hooks import AUDIT
from core.i18n import _
from core.services import audit, users
from core.services.audit import AuditQuery
from core.validation import Form, integer, optional_date, text
from core.web.controllers.base import is_htmx, render

FILTERS = ("actor", "action", "object_type", "object_id", "from", "to", "flagged")
"""The browser's query parameters; the export takes the same ones."""


def parse_query(params: Any) -> tuple[AuditQuery, dict[str, str], dict[str, str]]:
    """Filters from the query string: (query, errors per field, raw values for the form)."""
    values = {name: str(params.get(name) or "").strip() for name in FILTERS}
    form = Form(values)
    actor = form.field("actor", integer(minimum=1, required=False))
    action = form.field("action", text(64))
    object_type = form.field("object_type", text(64))
    object_id = form.field("object_id", text(64))
    date_from = form.field("from", optional_date)
    date_to = form.field("to", optional_date)
    if date_from and date_to and date_to < date_from:
        form.error("to", _("The end of the period is before its start."))
    query = AuditQuery(
        actor=actor,
        action=action or "",
        object_type=object_type or "",
        object_id=object_id or "",
        date_from=date_from,
        date_to=date_to,
        flagged=values["flagged"] in ("1", "on", "true"),
        cursor=str(params.get("cursor") or ""),
    )
    return query, form.errors, values


def filter_query_string(values: dict[str, str]) -> str:
    return urlencode({k: v for k, v in values.items() if v})


def action_options(actions: list[str], selected: str) -> list[tuple[str, str]]:
    """Each action, preceded by its family ("client.*") so one choice finds them all."""
    options: list[tuple[str, str]] = []
    for action in actions:
        if "." in action:
            family = action.split(".", 1)[0] + "." + audit.PREFIX_MARK
            if (family, family) not in options:
                options.append((family, family))
        options.append((action, action))
    if selected and (selected, selected) not in options:
        options.insert(0, (selected, selected))
    return options


@get("/admin/audit", opt=needs(AUDIT))
async def audit_log(request: Request) -> Template:
    query, errors, values = parse_query(request.query_params)
    rows, next_cursor = ([], None) if errors else await audit.list_entries(query)
    context: dict[str, Any] = {
        "rows": rows,
        "next_cursor": next_cursor,
        "filter_qs": filter_query_string(values),
    }
    if is_htmx(request) and request.headers.get("hx-target") == "audit-more":
        return render(request, "core/audit/_rows.html", **context)
    return render(
        request,
        "core/audit/list.html",
        status_code=422 if errors else 200,
        values=values,
        errors=errors,
        people=await users.list_users(active_only=False),
        actions=action_options(await audit.actions(), values["action"]),
        object_types=await audit.object_types(),
        **context,
    )


HANDLERS: list[Any] = [audit_log]
