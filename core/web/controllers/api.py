"""The JSON API (``/api/v1``, bearer tokens) and the page where users manage tokens.

Request bodies go through the same service functions as the web forms, so the
validation is identical: a `ValidationError` becomes 422 with per-field errors
(see core.web.app). Bodies and responses are msgspec structs so that the OpenAPI
schema at /api/schema documents them.
"""

from __future__ import annotations

import dataclasses
from datetime import date, datetime
from typing import Any, TypeVar

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.response import Redirect, Template
from msgspec import UNSET, UnsetType

from core.access import ANY_USER, needs
from core.default_hooks import (
    CLIENTS_DELETE,
    CLIENTS_EDIT,
    CLIENTS_VIEW,
    DEALS_EDIT,
    DEALS_VIEW,
    TASKS_EDIT,
    TASKS_VIEW,
)
from core.services import api_tokens, audit, clients, deals, tasks
from core.services.clients import ClientQuery
from core.services.common import NotFound
from core.services.deals import DealQuery
from core.validation import ValidationError
from core.web.controllers.base import current_user, form_data, render
from core.web.controllers.queries import CLIENT_QUERY, DEAL_QUERY

S = TypeVar("S", bound=msgspec.Struct)
MAX_PAGE = 200


class InvalidInput(msgspec.Struct, kw_only=True):
    """422: nothing was written; one message per invalid field."""

    status_code: int
    detail: str
    errors: dict[str, str]


_INVALID = {422: ResponseSpec(data_container=InvalidInput, description="Invalid input, per field")}


def _out(cls: type[S], row: dict[str, Any]) -> S:
    """A response struct from a service row (missing keys -> the field's default/None)."""
    values = {}
    for field in msgspec.structs.fields(cls):
        if field.name in row:
            values[field.name] = row[field.name]
        elif field.required:
            values[field.name] = None
    return cls(**values)


def _given(body: msgspec.Struct) -> dict[str, Any]:
    """The fields the caller actually sent (UNSET dropped)."""
    return {k: v for k, v in msgspec.structs.asdict(body).items() if v is not UNSET}


def _actor(request: Request) -> int:
    return int(current_user(request)["id"])


# --- clients -------------------------------------------------------------------------


class ClientIn(msgspec.Struct, kw_only=True):
    """A client as created or replaced (PUT). Validation is the web form's."""

    name: str = ""
    kind: str = "company"
    legal_name: str = ""
    inn: str = ""
    kpp: str = ""
    address: str = ""
    source: str = ""
    notes: str = ""
    phones: list[str] = msgspec.field(default_factory=list)
    emails: list[str] = msgspec.field(default_factory=list)
    tags: list[str] = msgspec.field(default_factory=list)
    responsible: int | None = None
    """User id of the responsible manager; the caller if omitted."""


class ClientPatch(msgspec.Struct, kw_only=True):
    """Only the fields sent are changed."""

    name: str | UnsetType = UNSET
    kind: str | UnsetType = UNSET
    legal_name: str | UnsetType = UNSET
    inn: str | UnsetType = UNSET
    kpp: str | UnsetType = UNSET
    address: str | UnsetType = UNSET
    source: str | UnsetType = UNSET
    notes: str | UnsetType = UNSET
    phones: list[str] | UnsetType = UNSET
    emails: list[str] | UnsetType = UNSET
    tags: list[str] | UnsetType = UNSET
    responsible: int | UnsetType = UNSET


class ClientOut(msgspec.Struct, kw_only=True):
    id: int
    kind: str
    name: str
    legal_name: str
    inn: str | None
    """Null when your role may not see it."""
    kpp: str | None
    """Null when your role may not see it."""
    address: str | None
    """Null when your role may not see it."""
    source: str
    notes: str
    phones: list[str] | None
    """E.164; null when your role may not see phones."""
    emails: list[str] | None
    """Null when your role may not see it."""
    tags: list[str]
    responsible: int | None
    responsible_name: str | None
    created_at: datetime
    updated_at: datetime
    last_activity_at: datetime


class ClientListItem(msgspec.Struct, kw_only=True):
    id: int
    kind: str
    name: str
    inn: str | None
    """Null when your role may not see it."""
    source: str
    phone: str | None
    """First phone (E.164) or empty; null when your role may not see phones."""
    email: str | None
    """Null when your role may not see it."""
    responsible_name: str | None
    created_at: datetime
    last_activity_at: datetime


class ClientPage(msgspec.Struct, kw_only=True):
    items: list[ClientListItem]
    next_cursor: str | None
    """Pass as ``cursor`` for the next page; null on the last page."""


_CLIENT_FIELDS = [f.name for f in msgspec.structs.fields(ClientIn)]


async def _client_out(client_id: int) -> ClientOut:
    return _out(ClientOut, await clients.get_client(client_id))


class ContactIn(msgspec.Struct, kw_only=True):
    name: str = ""
    position: str = ""
    notes: str = ""
    phones: list[str] = msgspec.field(default_factory=list)
    emails: list[str] = msgspec.field(default_factory=list)


class ContactOut(msgspec.Struct, kw_only=True):
    id: int
    client: int
    name: str
    position: str
    notes: str
    phones: list[str] | None
    emails: list[str] | None
    """Null when your role may not see it."""
    created_at: datetime


async def _contact_out(client_id: int, contact_id: int) -> ContactOut:
    for contact in await clients.list_contacts(client_id):
        if contact["id"] == contact_id:
            return _out(ContactOut, contact)
    raise NotFound(contact_id)


class ClientApi(Controller):
    path = "/api/v1/clients"
    tags = ["clients"]

    @get(
        "/",
        opt=needs(CLIENTS_VIEW),
        dependencies=CLIENT_QUERY,
        summary="List clients (keyset pages)",
    )
    async def list_clients(
        self, filters: NamedDependency[ClientQuery], limit: FromQuery[int] = clients.PAGE_SIZE
    ) -> ClientPage:
        query = dataclasses.replace(filters, size=max(1, min(limit, MAX_PAGE)))
        rows, next_cursor = await clients.list_clients(query)
        return ClientPage(items=[_out(ClientListItem, r) for r in rows], next_cursor=next_cursor)

    @post("/", opt=needs(CLIENTS_EDIT), responses=_INVALID, summary="Create a client")
    async def create_client(self, request: Request, data: JSONBody[ClientIn]) -> ClientOut:
        values = msgspec.structs.asdict(data)
        if values["responsible"] is None:
            values["responsible"] = _actor(request)
        client_id = await clients.create_client(values, _actor(request))
        return await _client_out(client_id)

    @get("/{client_id:int}", opt=needs(CLIENTS_VIEW), summary="One client")
    async def get_client(self, client_id: FromPath[int]) -> ClientOut:
        found = await _client_out(client_id)
        await audit.record_view(client_id)
        return found

    @put(
        "/{client_id:int}",
        opt=needs(CLIENTS_EDIT),
        responses=_INVALID,
        summary="Replace a client's details",
    )
    async def replace_client(
        self, request: Request, client_id: FromPath[int], data: JSONBody[ClientIn]
    ) -> ClientOut:
        current = await clients.get_client(client_id)
        values = msgspec.structs.asdict(data)
        if values["responsible"] is None:
            values["responsible"] = current["responsible"]
        await clients.update_client(client_id, values, _actor(request))
        return await _client_out(client_id)

    @patch(
        "/{client_id:int}",
        opt=needs(CLIENTS_EDIT),
        responses=_INVALID,
        summary="Change some of a client's details",
    )
    async def patch_client(
        self, request: Request, client_id: FromPath[int], data: JSONBody[ClientPatch]
    ) -> ClientOut:
        current = await clients.get_client(client_id)
        values = {key: current.get(key) for key in _CLIENT_FIELDS}
        values.update(_given(data))
        await clients.update_client(client_id, values, _actor(request))
        return await _client_out(client_id)

    @delete("/{client_id:int}", opt=needs(CLIENTS_DELETE), summary="Delete a client (soft)")
    async def delete_client(self, request: Request, client_id: FromPath[int]) -> None:
        await clients.delete_client(client_id, _actor(request))

    # contacts

    @get(
        "/{client_id:int}/contacts",
        opt=needs(CLIENTS_VIEW),
        summary="A client's contacts",
        tags=["contacts"],
    )
    async def list_contacts(self, client_id: FromPath[int]) -> list[ContactOut]:
        await clients.get_client(client_id)
        return [_out(ContactOut, c) for c in await clients.list_contacts(client_id)]

    @get(
        "/{client_id:int}/contacts/{contact_id:int}",
        opt=needs(CLIENTS_VIEW),
        summary="One contact",
        tags=["contacts"],
    )
    async def get_contact(self, client_id: FromPath[int], contact_id: FromPath[int]) -> ContactOut:
        await clients.get_client(client_id)
        return await _contact_out(client_id, contact_id)

    @post(
        "/{client_id:int}/contacts",
        opt=needs(CLIENTS_EDIT),
        responses=_INVALID,
        summary="Add a contact",
        tags=["contacts"],
    )
    async def create_contact(
        self, request: Request, client_id: FromPath[int], data: JSONBody[ContactIn]
    ) -> ContactOut:
        contact_id = await clients.save_contact(
            client_id, msgspec.structs.asdict(data), _actor(request)
        )
        return await _contact_out(client_id, contact_id)

    @put(
        "/{client_id:int}/contacts/{contact_id:int}",
        opt=needs(CLIENTS_EDIT),
        responses=_INVALID,
        summary="Replace a contact",
        tags=["contacts"],
    )
    async def update_contact(
        self,
        request: Request,
        client_id: FromPath[int],
        contact_id: FromPath[int],
        data: JSONBody[ContactIn],
    ) -> ContactOut:
        await clients.save_contact(
            client_id, msgspec.structs.asdict(data), _actor(request), contact_id
        )
        return await _contact_out(client_id, contact_id)

    @delete(
        "/{client_id:int}/contacts/{contact_id:int}",
        opt=needs(CLIENTS_EDIT),
        summary="Remove a contact",
        tags=["contacts"],
    )
    async def delete_contact(
        self, request: Request, client_id: FromPath[int], contact_id: FromPath[int]
    ) -> None:
        await clients.delete_contact(client_id, contact_id, _actor(request))


# --- deals ---------------------------------------------------------------------------


class DealIn(msgspec.Struct, kw_only=True):
    title: str = ""
    client: int | None = None
    pipeline: int | None = None
    """The first pipeline if omitted."""
    stage: int | None = None
    """The pipeline's first open stage if omitted."""
    amount: str | int | float | None = None
    """In major units: 1500.50 or "1 500,50"."""
    currency: str | None = None
    responsible: int | None = None
    """The caller if omitted."""
    expected_close: str | None = None
    """YYYY-MM-DD."""


class DealPatch(msgspec.Struct, kw_only=True):
    """Title, amount, currency, responsible, expected close; stages move via /move."""

    title: str | UnsetType = UNSET
    amount: str | int | float | UnsetType = UNSET
    currency: str | UnsetType = UNSET
    responsible: int | UnsetType = UNSET
    expected_close: str | UnsetType | None = UNSET


class DealMove(msgspec.Struct, kw_only=True):
    stage: int | None = None
    lost_reason: str = ""
    """Required when the target stage is a "lost" one."""


class DealOut(msgspec.Struct, kw_only=True):
    id: int
    title: str
    client: int
    client_name: str | None
    pipeline: int
    pipeline_name: str | None
    stage: int
    stage_name: str | None
    stage_outcome: str | None
    amount_minor: int | None
    """Null when your role may not see it."""
    """Minor units (kopecks, cents)."""
    currency: str
    responsible: int | None
    responsible_name: str | None
    expected_close: date | None
    lost_reason: str
    closed_at: datetime | None
    created_at: datetime
    updated_at: datetime


class DealListItem(msgspec.Struct, kw_only=True):
    id: int
    title: str
    client: int
    client_name: str | None
    pipeline_name: str | None
    stage_name: str | None
    stage_outcome: str | None
    amount_minor: int | None
    """Null when your role may not see it."""
    currency: str
    responsible_name: str | None
    expected_close: date | None
    closed_at: datetime | None
    created_at: datetime


class DealPage(msgspec.Struct, kw_only=True):
    items: list[DealListItem]
    next_cursor: str | None


def _amount_text(minor: int | None) -> str:
    minor = minor or 0
    return f"{minor // 100}.{minor % 100:02d}"


class DealApi(Controller):
    path = "/api/v1/deals"
    tags = ["deals"]

    @get(
        "/",
        opt=needs(DEALS_VIEW),
        dependencies=DEAL_QUERY,
        summary="List deals, newest first (keyset pages)",
    )
    async def list_deals(
        self, filters: NamedDependency[DealQuery], limit: FromQuery[int] = deals.PAGE_SIZE
    ) -> DealPage:
        query = dataclasses.replace(filters, size=max(1, min(limit, MAX_PAGE)))
        rows, next_cursor = await deals.list_deals(query)
        return DealPage(items=[_out(DealListItem, r) for r in rows], next_cursor=next_cursor)

    @post("/", opt=needs(DEALS_EDIT), responses=_INVALID, summary="Create a deal")
    async def create_deal(self, request: Request, data: JSONBody[DealIn]) -> DealOut:
        values = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not None}
        deal_id = await deals.create_deal(values, _actor(request))
        return _out(DealOut, await deals.get_deal(deal_id))

    @get("/{deal_id:int}", opt=needs(DEALS_VIEW), summary="One deal")
    async def get_deal(self, deal_id: FromPath[int]) -> DealOut:
        return _out(DealOut, await deals.get_deal(deal_id))

    @patch(
        "/{deal_id:int}",
        opt=needs(DEALS_EDIT),
        responses=_INVALID,
        summary="Change some of a deal's details",
    )
    async def patch_deal(
        self, request: Request, deal_id: FromPath[int], data: JSONBody[DealPatch]
    ) -> DealOut:
        current = await deals.get_deal(deal_id)
        expected = current.get("expected_close")
        values: dict[str, Any] = {
            "title": current["title"],
            "amount": _amount_text(current["amount_minor"]),
            "currency": current["currency"],
            "responsible": current["responsible"],
            "expected_close": expected.isoformat() if isinstance(expected, date) else expected,
        }
        values.update(_given(data))
        if values["expected_close"] is None:
            values["expected_close"] = ""
        await deals.update_deal(deal_id, values, _actor(request))
        return _out(DealOut, await deals.get_deal(deal_id))

    @post(
        "/{deal_id:int}/move",
        opt=needs(DEALS_EDIT),
        responses=_INVALID,
        status_code=200,
        summary="Move a deal to another stage",
    )
    async def move_deal(
        self, request: Request, deal_id: FromPath[int], data: JSONBody[DealMove]
    ) -> DealOut:
        await deals.move_deal(deal_id, data.stage, _actor(request), lost_reason=data.lost_reason)
        return _out(DealOut, await deals.get_deal(deal_id))


# --- tasks ---------------------------------------------------------------------------


class TaskIn(msgspec.Struct, kw_only=True):
    title: str = ""
    description: str = ""
    due_at: str = ""
    """ISO 8601; without an offset it is the install's local time."""
    priority: int = 2
    """1 low, 2 normal, 3 high."""
    assignee: int | None = None
    """The caller if omitted."""
    client: int | None = None
    deal: int | None = None


class TaskPatch(msgspec.Struct, kw_only=True):
    title: str | UnsetType = UNSET
    description: str | UnsetType = UNSET
    due_at: str | UnsetType = UNSET
    priority: int | UnsetType = UNSET
    assignee: int | UnsetType = UNSET
    client: int | UnsetType | None = UNSET
    deal: int | UnsetType | None = UNSET


class TaskOut(msgspec.Struct, kw_only=True):
    id: int
    title: str
    description: str
    due_at: datetime
    priority: int
    assignee: int
    assignee_name: str | None
    client: int | None
    client_name: str | None
    deal: int | None
    deal_title: str | None
    done_at: datetime | None
    completed_by: int | None
    completed_by_name: str | None
    created_by: int | None
    created_at: datetime
    overdue: bool


class TaskList(msgspec.Struct, kw_only=True):
    items: list[TaskOut]


class TaskApi(Controller):
    path = "/api/v1/tasks"
    tags = ["tasks"]

    @get(
        "/",
        opt=needs(TASKS_VIEW),
        summary="The caller's tasks of one view: today, overdue, upcoming or done",
    )
    async def list_tasks(self, request: Request, view: FromQuery[str] = "today") -> TaskList:
        rows = await tasks.my_tasks(_actor(request), view=view)
        return TaskList(items=[_out(TaskOut, r) for r in rows])

    @post("/", opt=needs(TASKS_EDIT), responses=_INVALID, summary="Create a task")
    async def create_task(self, request: Request, data: JSONBody[TaskIn]) -> TaskOut:
        task_id = await tasks.create_task(msgspec.structs.asdict(data), _actor(request))
        return _out(TaskOut, await tasks.get_task(task_id))

    @get("/{task_id:int}", opt=needs(TASKS_VIEW), summary="One task")
    async def get_task(self, task_id: FromPath[int]) -> TaskOut:
        return _out(TaskOut, await tasks.get_task(task_id))

    @patch(
        "/{task_id:int}",
        opt=needs(TASKS_EDIT),
        responses=_INVALID,
        summary="Change some of a task's details",
    )
    async def patch_task(
        self, request: Request, task_id: FromPath[int], data: JSONBody[TaskPatch]
    ) -> TaskOut:
        current = await tasks.get_task(task_id)
        values: dict[str, Any] = {
            key: current[key]
            for key in ("title", "description", "due_at", "priority", "assignee", "client", "deal")
        }
        values.update(_given(data))
        await tasks.update_task(task_id, values, _actor(request))
        return _out(TaskOut, await tasks.get_task(task_id))

    @post(
        "/{task_id:int}/complete",
        opt=needs(TASKS_EDIT),
        status_code=200,
        summary="Mark a task done",
    )
    async def complete_task(self, request: Request, task_id: FromPath[int]) -> TaskOut:
        await tasks.complete_task(task_id, _actor(request))
        return _out(TaskOut, await tasks.get_task(task_id))

    @post(
        "/{task_id:int}/reopen",
        opt=needs(TASKS_EDIT),
        status_code=200,
        summary="Reopen a done task",
    )
    async def reopen_task(self, request: Request, task_id: FromPath[int]) -> TaskOut:
        await tasks.reopen_task(task_id, _actor(request))
        return _out(TaskOut, await tasks.get_task(task_id))


# --- the token page ------------------------------------------------------------------


async def _tokens_page(request: Request, status_code: int = 200, **extra: Any) -> Template:
    return render(
        request,
        "core/profile_tokens.html",
        status_code=status_code,
        tokens=await api_tokens.list_tokens(_actor(request)),
        new_token=extra.pop("new_token", None),
        errors=extra.pop("errors", {}),
        values=extra.pop("values", {}),
        **extra,
    )


@get("/profile/tokens", opt=ANY_USER, include_in_schema=False)
async def profile_tokens(request: Request) -> Template:
    return await _tokens_page(request)


@post("/profile/tokens", opt=ANY_USER, status_code=200, include_in_schema=False)
async def profile_token_create(request: Request) -> Template:
    data = await form_data(request)
    name = str(data.get("name", ""))
    try:
        token = await api_tokens.create_token(_actor(request), name)
    except ValidationError as exc:
        return await _tokens_page(request, 422, errors=exc.errors, values={"name": name})
    response = await _tokens_page(request, new_token=token)
    response.headers["Cache-Control"] = "no-store"
    return response


@post(
    "/profile/tokens/{token_id:int}/revoke", opt=ANY_USER, status_code=200, include_in_schema=False
)
async def profile_token_revoke(request: Request, token_id: FromPath[int]) -> Response[Any]:
    await api_tokens.revoke(_actor(request), token_id)
    if request.headers.get("hx-request"):
        return Response(b"", status_code=200, headers={"HX-Redirect": "/profile/tokens"})
    return Redirect("/profile/tokens", status_code=303)


HANDLERS = [
    ClientApi,
    DealApi,
    TaskApi,
    profile_tokens,
    profile_token_create,
    profile_token_revoke,
]
