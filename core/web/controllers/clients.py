"""Client list, card, form, contacts, notes and the timeline."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Template

from core.access import needs
from core.default_hooks import CLIENTS_DELETE, CLIENTS_EDIT, CLIENTS_VIEW
from core.runtime import get_runtime
from core.services import audit, clients, timeline, users
from core.services.clients import ClientQuery
from core.validation import ValidationError
from core.web.controllers.base import (
    current_user,
    form_data,
    is_htmx,
    redirect,
    render,
    visible_people,
)
from core.web.controllers.queries import CLIENT_QUERY
from core.web.timeline import timeline_templates


def _form_values(client: dict[str, Any]) -> dict[str, Any]:
    return {
        **client,
        "phones": "\n".join(client.get("phones") or []),
        "emails": "\n".join(client.get("emails") or []),
        "tags": ", ".join(client.get("tags") or []),
    }


async def _form_page(
    request: Request,
    values: dict[str, Any],
    errors: dict[str, str] | None = None,
    duplicates: list[dict[str, Any]] | None = None,
    status_code: int = 200,
) -> Template:
    template = "core/clients/_form.html" if is_htmx(request) else "core/clients/form.html"
    return render(
        request,
        template,
        status_code=status_code,
        values=values,
        errors=errors or {},
        duplicates=duplicates or [],
        managers=await users.list_users(),
    )


@get("/clients", opt=needs(CLIENTS_VIEW), dependencies=CLIENT_QUERY)
async def client_list(request: Request, filters: NamedDependency[ClientQuery]) -> Template:
    rows, next_cursor = await clients.list_clients(filters)
    context: dict[str, Any] = {"rows": rows, "next_cursor": next_cursor, "query": filters}
    if is_htmx(request) and request.headers.get("hx-target") in ("client-rows", "client-more"):
        return render(request, "core/clients/_rows.html", **context)
    return render(
        request,
        "core/clients/list.html",
        managers=await visible_people("client"),
        tags=await clients.tag_names(),
        sources=await clients.source_names(),
        **context,
    )


@get("/clients/new", opt=needs(CLIENTS_EDIT))
async def client_new(request: Request, phone: FromQuery[str] = "") -> Template:
    """``?phone=`` prefills the number (a screen pop offers "new client" for an unknown caller)."""
    user = current_user(request)
    values = {"kind": "company", "responsible": user["id"], "phones": phone.strip()[:64]}
    return await _form_page(request, values)


@post("/clients", opt=needs(CLIENTS_EDIT), status_code=200)
async def client_create(request: Request) -> Response[Any]:
    data = await form_data(request)
    if not data.get("confirm_duplicates"):
        try:
            checked = await clients.validate_client(data)
        except ValidationError as exc:
            return await _form_page(request, data, exc.errors, status_code=422)
        duplicates = await clients.find_duplicates(
            checked.phones, checked.emails, checked.values["inn"]
        )
        if duplicates:
            return await _form_page(request, data, duplicates=duplicates, status_code=409)
    try:
        client_id = await clients.create_client(data, current_user(request)["id"])
    except ValidationError as exc:
        return await _form_page(request, data, exc.errors, status_code=422)
    return redirect(request, f"/clients/{client_id}")


@get("/clients/{client_id:int}", opt=needs(CLIENTS_VIEW))
async def client_card(request: Request, client_id: FromPath[int]) -> Template:
    user = current_user(request)
    client = await clients.get_client(client_id)
    # One read after the other, not gathered: each takes well under a millisecond, and
    # a task and a pooled connection per read cost the busy server more CPU (about a
    # tenth of the card) than waiting for them one by one costs this request.
    entries, next_cursor = await timeline.page(client_id)
    contacts = await clients.list_contacts(client_id)
    sections = await card_sections(client_id)
    await audit.record_view(client_id)
    runtime = get_runtime()
    tabs = sorted(
        runtime.plugins.collect("card_tabs", entity="client", record=client, user=user),
        key=lambda t: t.order,
    )
    return render(
        request,
        "core/clients/card.html",
        client=client,
        contacts=contacts,
        entries=entries,
        next_cursor=next_cursor,
        timeline_templates=timeline_templates(),
        tabs=[t for t in tabs if t.placement == "tab"],
        panels=[t for t in tabs if t.placement == "panel"],
        sections=sections,
    )


async def card_sections(client_id: int) -> dict[str, Any]:
    """Deals, tasks and files of the card, each from its own service."""
    from core.services import attachments, deals, tasks

    return {
        "deals": await deals.for_client(client_id),
        "tasks": await tasks.open_for_client(client_id),
        "files": await attachments.for_client(client_id),
    }


@get("/clients/{client_id:int}/timeline", opt=needs(CLIENTS_VIEW))
async def client_timeline(
    request: Request, client_id: FromPath[int], cursor: FromQuery[str] = ""
) -> Template:
    await clients.get_client(client_id)
    entries, next_cursor = await timeline.page(client_id, cursor=cursor or None)
    return render(
        request,
        "core/timeline/_entries.html",
        client={"id": client_id},
        entries=entries,
        next_cursor=next_cursor,
        timeline_templates=timeline_templates(),
    )


@get("/clients/{client_id:int}/edit", opt=needs(CLIENTS_EDIT))
async def client_edit(request: Request, client_id: FromPath[int]) -> Template:
    client = await clients.get_client(client_id)
    return await _form_page(request, _form_values(client))


@post("/clients/{client_id:int}", opt=needs(CLIENTS_EDIT), status_code=200)
async def client_update(request: Request, client_id: FromPath[int]) -> Response[Any]:
    await clients.get_client(client_id)
    data = await form_data(request)
    try:
        await clients.update_client(client_id, data, current_user(request)["id"])
    except ValidationError as exc:
        return await _form_page(request, {**data, "id": client_id}, exc.errors, status_code=422)
    return redirect(request, f"/clients/{client_id}")


@post("/clients/{client_id:int}/delete", opt=needs(CLIENTS_DELETE), status_code=200)
async def client_delete(request: Request, client_id: FromPath[int]) -> Response[Any]:
    await clients.delete_client(client_id, current_user(request)["id"])
    return redirect(request, "/clients")


@post("/clients/{client_id:int}/notes", opt=needs(CLIENTS_EDIT), status_code=200)
async def note_add(request: Request, client_id: FromPath[int]) -> Template:
    data = await form_data(request)
    errors: dict[str, str] = {}
    try:
        await clients.add_note(client_id, str(data.get("text", "")), current_user(request)["id"])
    except ValidationError as exc:
        errors = exc.errors
    entries, next_cursor = await timeline.page(client_id)
    return render(
        request,
        "core/clients/_timeline.html",
        status_code=422 if errors else 200,
        client={"id": client_id},
        entries=entries,
        next_cursor=next_cursor,
        timeline_templates=timeline_templates(),
        note_errors=errors,
        note_text=data.get("text", "") if errors else "",
    )


# --- contacts ---------------------------------------------------------------------------


async def _contacts_panel(request: Request, client_id: FromPath[int], **extra: Any) -> Template:
    return render(
        request,
        "core/clients/_contacts.html",
        status_code=extra.pop("status_code", 200),
        client={"id": client_id},
        contacts=await clients.list_contacts(client_id),
        **extra,
    )


@get("/clients/{client_id:int}/contacts", opt=needs(CLIENTS_VIEW))
async def contact_panel(request: Request, client_id: FromPath[int]) -> Template:
    await clients.get_client(client_id)
    return await _contacts_panel(request, client_id)


@get("/clients/{client_id:int}/contacts/form", opt=needs(CLIENTS_EDIT))
async def contact_form(
    request: Request, client_id: FromPath[int], contact_id: FromQuery[int | None] = None
) -> Template:
    values: dict[str, Any] = {}
    if contact_id:
        contact = next(
            (c for c in await clients.list_contacts(client_id) if c["id"] == contact_id), None
        )
        if contact:
            values = {
                **contact,
                "phones": "\n".join(contact["phones"] or []),
                "emails": "\n".join(contact["emails"] or []),
            }
    return await _contacts_panel(request, client_id, editing=True, values=values, errors={})


@post("/clients/{client_id:int}/contacts", opt=needs(CLIENTS_EDIT), status_code=200)
async def contact_save(request: Request, client_id: FromPath[int]) -> Template:
    data = await form_data(request)
    contact_id = int(data["contact_id"]) if str(data.get("contact_id", "")).isdigit() else None
    try:
        await clients.save_contact(client_id, data, current_user(request)["id"], contact_id)
    except ValidationError as exc:
        return await _contacts_panel(
            request, client_id, status_code=422, editing=True, values=data, errors=exc.errors
        )
    return await _contacts_panel(request, client_id)


@post(
    "/clients/{client_id:int}/contacts/{contact_id:int}/delete",
    opt=needs(CLIENTS_EDIT),
    status_code=200,
)
async def contact_delete(
    request: Request, client_id: FromPath[int], contact_id: FromPath[int]
) -> Template:
    await clients.delete_contact(client_id, contact_id, current_user(request)["id"])
    return await _contacts_panel(request, client_id)


HANDLERS = [
    client_list,
    client_new,
    client_create,
    client_card,
    client_timeline,
    client_edit,
    client_update,
    client_delete,
    note_add,
    contact_panel,
    contact_form,
    contact_save,
    contact_delete,
]
