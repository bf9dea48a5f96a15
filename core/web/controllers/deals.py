"""Deals: the kanban board, the list, the deal card and form, and pipeline admin."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from core.access import needs
from core.default_hooks import DEALS_EDIT, DEALS_VIEW, PIPELINES
from core.services import clients, deals, timeline, users
from core.services.clients import ClientQuery
from core.services.common import NotFound
from core.services.deals import DealQuery
from core.validation import ValidationError, integer
from core.web.controllers.base import (
    current_user,
    form_data,
    is_htmx,
    redirect,
    render,
    visible_people,
)
from core.web.controllers.queries import DEAL_QUERY
from core.web.timeline import timeline_templates


def _optional_int(value: Any) -> int | None:
    text = str(value or "").strip()
    return int(text) if text.isdigit() else None


def _amount_text(amount_minor: int | None) -> str:
    if not amount_minor:
        return ""
    whole, cents = divmod(int(amount_minor), 100)
    return f"{whole}.{cents:02d}" if cents else str(whole)


# --- board ----------------------------------------------------------------------------


async def _board_page(
    request: Request,
    pipeline_id: int | None,
    responsible: int | None = None,
    status_code: int = 200,
    fragment: bool = False,
    **extra: Any,
) -> Template:
    pipelines = await deals.list_pipelines()
    if pipeline_id is None and pipelines:
        pipeline_id = pipelines[0]["id"]
    board = (
        await deals.board(pipeline_id, responsible, known=pipelines)
        if pipeline_id is not None
        else None
    )
    context = {
        "board": board,
        "pipelines": pipelines,
        "responsible": responsible,
        "error": "",
        "lost": None,
        **extra,
    }
    if fragment:
        return render(request, "core/deals/_board.html", status_code=status_code, **context)
    return render(
        request,
        "core/deals/board.html",
        status_code=status_code,
        managers=await visible_people("deal"),
        **context,
    )


@get("/deals", opt=needs(DEALS_VIEW))
async def deal_board(
    request: Request,
    pipeline: FromQuery[int | None] = None,
    responsible: FromQuery[int | None] = None,
) -> Template:
    fragment = is_htmx(request) and request.headers.get("hx-target") == "board"
    return await _board_page(request, pipeline, responsible, fragment=fragment)


@post("/deals/{deal_id:int}/move", opt=needs(DEALS_EDIT), status_code=200)
async def deal_move(request: Request, deal_id: FromPath[int]) -> Response[Any]:
    """Drag-and-drop, the "→" button and the card's stage buttons all post here."""
    deal = await deals.get_deal(deal_id)
    data = await form_data(request)
    user = current_user(request)
    from_card = data.get("from") == "card"
    responsible = _optional_int(data.get("responsible"))
    try:
        await deals.move_deal(
            deal_id,
            data.get("stage"),
            user["id"],
            str(data.get("lost_reason", "") or ""),
            deal=deal,
        )
    except ValidationError as exc:
        if from_card:
            return await _card_page(
                request, deal_id, status_code=422, move_errors=exc.errors, move_values=data
            )
        lost = None
        error = exc.errors.get("stage", "")
        if "lost_reason" in exc.errors:
            lost = {
                "deal": deal,
                "stage": data.get("stage"),
                "form": data,
                "errs": exc.errors,
            }
        elif not error:
            error = "; ".join(exc.errors.values())
        return await _board_page(
            request,
            deal["pipeline"],
            responsible,
            status_code=422,
            fragment=is_htmx(request),
            error=error,
            lost=lost,
        )
    if from_card:
        return redirect(request, f"/deals/{deal_id}")
    if not is_htmx(request):
        return Redirect(f"/deals?pipeline={deal['pipeline']}", status_code=303)
    if data.get("refresh") == "columns":
        # The board's own moves: only the column left and the one entered change, so
        # only they come back (a third of the work of the whole board).
        changed = {deal["stage"], integer(minimum=1)(data.get("stage"))}
        board = await deals.board(deal["pipeline"], responsible, only_stages=changed)
        page = render(request, "core/deals/_moved.html", board=board, responsible=responsible)
        page.headers["HX-Reswap"] = "none"
        return page
    return await _board_page(request, deal["pipeline"], responsible, fragment=True)


# --- list -----------------------------------------------------------------------------


@get("/deals/list", opt=needs(DEALS_VIEW), dependencies=DEAL_QUERY)
async def deal_list(request: Request, filters: NamedDependency[DealQuery]) -> Template:
    rows, next_cursor = await deals.list_deals(filters)
    context: dict[str, Any] = {"rows": rows, "next_cursor": next_cursor, "query": filters}
    if is_htmx(request) and request.headers.get("hx-target") in ("deal-rows", "deal-more"):
        return render(request, "core/deals/_rows.html", **context)
    return render(
        request,
        "core/deals/list.html",
        managers=await visible_people("deal"),
        pipelines=await deals.list_pipelines(),
        **context,
    )


# --- form -----------------------------------------------------------------------------


async def _form_page(
    request: Request,
    values: dict[str, Any],
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Template:
    template = "core/deals/_form.html" if is_htmx(request) else "core/deals/form.html"
    client_name = ""
    client_options: list[dict[str, Any]] = []
    client_id = _optional_int(values.get("client"))
    if client_id:
        try:
            client_name = (await clients.get_client(client_id))["name"]
        except NotFound:
            client_id = None
    if not values.get("id") and not client_name:
        client_options, _cursor = await clients.list_clients(ClientQuery(size=200))
    return render(
        request,
        template,
        status_code=status_code,
        values=values,
        errors=errors or {},
        client_name=client_name,
        client_options=client_options,
        pipelines=await deals.list_pipelines(),
        managers=await users.list_users(),
    )


@get("/deals/new", opt=needs(DEALS_EDIT))
async def deal_new(
    request: Request, client: FromQuery[int | None] = None, pipeline: FromQuery[int | None] = None
) -> Template:
    from core.runtime import get_runtime

    return await _form_page(
        request,
        {
            "client": client or "",
            "pipeline": pipeline or "",
            "responsible": current_user(request)["id"],
            "currency": get_runtime().settings.default_currency,
        },
    )


@post("/deals", opt=needs(DEALS_EDIT), status_code=200)
async def deal_create(request: Request) -> Response[Any]:
    data = await form_data(request)
    try:
        deal_id = await deals.create_deal(data, current_user(request)["id"])
    except ValidationError as exc:
        return await _form_page(request, data, exc.errors, status_code=422)
    return redirect(request, f"/deals/{deal_id}")


@get("/deals/{deal_id:int}/edit", opt=needs(DEALS_EDIT))
async def deal_edit(request: Request, deal_id: FromPath[int]) -> Template:
    deal = await deals.get_deal(deal_id)
    values = {
        **deal,
        "amount": _amount_text(deal["amount_minor"]),
        "expected_close": deal["expected_close"].isoformat() if deal["expected_close"] else "",
    }
    return await _form_page(request, values)


@post("/deals/{deal_id:int}/edit", opt=needs(DEALS_EDIT), status_code=200)
async def deal_update(request: Request, deal_id: FromPath[int]) -> Response[Any]:
    deal = await deals.get_deal(deal_id)
    data = await form_data(request)
    try:
        await deals.update_deal(deal_id, data, current_user(request)["id"])
    except ValidationError as exc:
        values = {**data, "id": deal_id, "client": deal["client"]}
        return await _form_page(request, values, exc.errors, status_code=422)
    return redirect(request, f"/deals/{deal_id}")


@post("/deals/{deal_id:int}/delete", opt=needs(DEALS_EDIT), status_code=200)
async def deal_delete(request: Request, deal_id: FromPath[int]) -> Response[Any]:
    deal = await deals.get_deal(deal_id)
    await deals.delete_deal(deal_id, current_user(request)["id"])
    return redirect(request, f"/clients/{deal['client']}")


# --- card -----------------------------------------------------------------------------


async def _card_page(
    request: Request, deal_id: int, status_code: int = 200, **extra: Any
) -> Template:
    deal = await deals.get_deal(deal_id)
    pipeline = await deals.get_pipeline(deal["pipeline"])
    entries, _cursor = await timeline.page(deal["client"], deal_id=deal_id, size=100)
    context = {
        "deal": deal,
        "stages": pipeline["stages"],
        "entries": entries,
        "timeline_templates": timeline_templates(),
        "move_errors": {},
        "move_values": {},
        **extra,
    }
    if is_htmx(request) and request.headers.get("hx-target") == "deal-stage":
        return render(request, "core/deals/_stage.html", status_code=status_code, **context)
    return render(request, "core/deals/card.html", status_code=status_code, **context)


@get("/deals/{deal_id:int}", opt=needs(DEALS_VIEW))
async def deal_card(request: Request, deal_id: FromPath[int]) -> Template:
    return await _card_page(request, deal_id)


# --- pipeline admin -------------------------------------------------------------------


async def _pipelines_page(
    request: Request, status_code: int = 200, errors: dict[str, dict[str, str]] | None = None
) -> Template:
    template = (
        "core/admin/pipelines_panel.html" if is_htmx(request) else "core/admin/pipelines.html"
    )
    return render(
        request,
        template,
        status_code=status_code,
        pipelines=await deals.list_pipelines(include_archived=True),
        errors=errors or {},
    )


async def _admin_action(request: Request, scope: str, action: Any) -> Response[Any]:
    """Run one admin change; errors are shown next to the form they came from."""
    try:
        await action()
    except ValidationError as exc:
        return await _pipelines_page(request, status_code=422, errors={scope: exc.errors})
    if not is_htmx(request):
        return Redirect("/admin/pipelines", status_code=303)
    return await _pipelines_page(request)


@get("/admin/pipelines", opt=needs(PIPELINES))
async def pipelines_admin(request: Request) -> Template:
    return await _pipelines_page(request)


@post("/admin/pipelines", opt=needs(PIPELINES), status_code=200)
async def pipeline_create(request: Request) -> Response[Any]:
    data = await form_data(request)

    async def action() -> None:
        await deals.create_pipeline(str(data.get("name", "")))

    return await _admin_action(request, "new-pipeline", action)


@post("/admin/pipelines/{pipeline_id:int}/rename", opt=needs(PIPELINES), status_code=200)
async def pipeline_rename(request: Request, pipeline_id: FromPath[int]) -> Response[Any]:
    data = await form_data(request)

    async def action() -> None:
        await deals.rename_pipeline(pipeline_id, str(data.get("name", "")))

    return await _admin_action(request, f"pipeline-{pipeline_id}", action)


@post("/admin/pipelines/{pipeline_id:int}/stages", opt=needs(PIPELINES), status_code=200)
async def stage_add(request: Request, pipeline_id: FromPath[int]) -> Response[Any]:
    data = await form_data(request)

    async def action() -> None:
        await deals.add_stage(
            pipeline_id, str(data.get("name", "")), str(data.get("outcome", "open"))
        )

    return await _admin_action(request, f"new-stage-{pipeline_id}", action)


@post("/admin/pipelines/{pipeline_id:int}/reorder", opt=needs(PIPELINES), status_code=200)
async def stages_reorder(request: Request, pipeline_id: FromPath[int]) -> Response[Any]:
    data = await form_data(request)
    order = data.get("stage", [])
    order = order if isinstance(order, list) else [order]

    async def action() -> None:
        await deals.reorder_stages(pipeline_id, order)

    return await _admin_action(request, f"pipeline-{pipeline_id}", action)


@post("/admin/stages/{stage_id:int}/rename", opt=needs(PIPELINES), status_code=200)
async def stage_rename(request: Request, stage_id: FromPath[int]) -> Response[Any]:
    data = await form_data(request)

    async def action() -> None:
        await deals.rename_stage(stage_id, str(data.get("name", "")))

    return await _admin_action(request, f"stage-{stage_id}", action)


@post("/admin/stages/{stage_id:int}/move", opt=needs(PIPELINES), status_code=200)
async def stage_move(request: Request, stage_id: FromPath[int]) -> Response[Any]:
    data = await form_data(request)
    direction = -1 if data.get("direction") == "up" else 1

    async def action() -> None:
        await deals.move_stage(stage_id, direction)

    return await _admin_action(request, f"stage-{stage_id}", action)


@post("/admin/stages/{stage_id:int}/delete", opt=needs(PIPELINES), status_code=200)
async def stage_delete(request: Request, stage_id: FromPath[int]) -> Response[Any]:
    async def action() -> None:
        await deals.delete_stage(stage_id)

    return await _admin_action(request, f"stage-{stage_id}", action)


HANDLERS = [
    deal_board,
    deal_move,
    deal_list,
    deal_new,
    deal_create,
    deal_edit,
    deal_update,
    deal_delete,
    deal_card,
    pipelines_admin,
    pipeline_create,
    pipeline_rename,
    stage_add,
    stages_reorder,
    stage_rename,
    stage_move,
    stage_delete,
]
