"""Helpers shared by the HTML controllers."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response
from litestar.response import Redirect, Template

from core import access
from core.runtime import get_runtime
from core.web.templating import page_context


def current_user(request: Request) -> dict[str, Any]:
    return request.scope["user"]  # type: ignore[typeddict-item]


def menu_for(user: dict[str, Any]) -> list[Any]:
    items = get_runtime().plugins.collect("menu_items", user=user)
    can = access.current().can
    visible = [i for i in items if i.permission is None or can(i.permission)]
    return sorted(visible, key=lambda item: item.order)


async def visible_people(record_type: str) -> list[dict[str, Any]]:
    """Users whose records of this type the current user may see: a list filter's choices."""
    from core.services import users

    owners = access.current().visible_owners(record_type)
    people = await users.list_users()
    return people if owners is None else [p for p in people if p["id"] in owners]


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> Template:
    """A full page (or a fragment: partial templates simply don't extend base.html)."""
    user = request.scope.get("user")
    base = page_context(request)
    if user:
        base["menu"] = menu_for(user)
    return Template(template, context={**base, **context}, status_code=status_code)


async def form_data(request: Request) -> dict[str, Any]:
    """Form fields as a plain dict; repeated fields become lists."""
    form = await request.form()
    data: dict[str, Any] = {}
    for key in form:
        values = form.getall(key)
        data[key] = values if len(values) > 1 else values[0]
    return data


def is_htmx(request: Request) -> bool:
    return bool(request.headers.get("hx-request"))


def redirect(request: Request, url: str) -> Response[Any]:
    """After a successful form: htmx follows HX-Redirect, a plain form a 303."""
    if is_htmx(request):
        return Response(b"", status_code=200, headers={"HX-Redirect": url})
    return Redirect(url, status_code=303)
