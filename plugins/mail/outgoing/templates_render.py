"""Mail templates: Jinja in a sandbox, with the client, contact, deal and user as
variables.

The sandbox keeps a template author from reaching Python internals; strict
undefined turns a misspelt variable into an error shown next to the field instead
of an empty gap in a letter to a customer.
"""

from __future__ import annotations

from typing import Any

from jinja2 import StrictUndefined, TemplateError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from core.i18n import _, format_money
from core.services import clients, deals
from core.services.common import NotFound

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)

VARIABLES: dict[str, list[str]] = {
    "client": ["name", "legal_name", "inn", "kpp", "address", "email", "phone", "manager"],
    "contact": ["name", "position", "email", "phone"],
    "deal": ["title", "amount", "stage"],
    "user": ["full_name", "email", "phone"],
    "unsubscribe_url": [],
}
"""What a template may use (shown on the templates page and in docs/mail.md)."""


class TemplateProblem(ValueError):
    """A template that cannot be rendered; the message says what to fix."""


def render(text: str, context: dict[str, Any]) -> str:
    try:
        return _ENV.from_string(text).render(context)
    except UndefinedError as exc:
        raise TemplateProblem(
            _(
                "Unknown variable: %(detail)s. Available: %(names)s.",
                detail=exc.message,
                names=", ".join(available_names()),
            )
        ) from None
    except TemplateError as exc:
        raise TemplateProblem(_("Template error: %(detail)s", detail=exc.message)) from None


def available_names() -> list[str]:
    return [
        f"{group}.{name}" if name else group
        for group, names in VARIABLES.items()
        for name in names or [""]
    ]


def check(text: str) -> str | None:
    """The problem with a template text rendered against sample values, or None."""
    try:
        render(text, sample_context())
    except TemplateProblem as exc:
        return str(exc)
    return None


def sample_context() -> dict[str, Any]:
    return {
        "client": dict.fromkeys(VARIABLES["client"], "…") | {"name": _("Client name")},
        "contact": dict.fromkeys(VARIABLES["contact"], "…") | {"name": _("Contact name")},
        "deal": dict.fromkeys(VARIABLES["deal"], "…"),
        "user": dict.fromkeys(VARIABLES["user"], "…"),
        "unsubscribe_url": "https://example.invalid/unsubscribe",
    }


def _blank(group: str) -> dict[str, str]:
    """A missing contact or deal renders as empty text, not as an error."""
    return dict.fromkeys(VARIABLES[group], "")


async def context_for(
    client_id: int | None,
    user: dict[str, Any],
    *,
    contact_email: str = "",
    deal_id: int | None = None,
    client_row: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Template variables as the current user may see them (hidden fields stay empty)."""
    context: dict[str, Any] = {
        "client": _blank("client"),
        "contact": _blank("contact"),
        "deal": _blank("deal"),
        "user": {
            "full_name": user.get("full_name", ""),
            "email": user.get("email", ""),
            "phone": user.get("phone", ""),
        },
        "unsubscribe_url": "",
    }
    if client_id is None:
        return context
    client = client_row or await clients.get_client(client_id)
    context["client"] = {
        "name": client.get("name") or "",
        "legal_name": client.get("legal_name") or "",
        "inn": client.get("inn") or "",
        "kpp": client.get("kpp") or "",
        "address": client.get("address") or "",
        "email": client.get("email") or (client.get("emails") or [""])[0] or "",
        "phone": client.get("phone") or (client.get("phones") or [""])[0] or "",
        "manager": client.get("responsible_name") or "",
    }
    if contact_email:
        for contact in await clients.list_contacts(client_id):
            if contact_email in (contact.get("emails") or []):
                context["contact"] = {
                    "name": contact["name"],
                    "position": contact.get("position") or "",
                    "email": contact_email,
                    "phone": (contact.get("phones") or [""])[0],
                }
                break
    if deal_id is not None:
        try:
            deal = await deals.get_deal(deal_id)
        except NotFound:
            deal = None
        if deal and deal.get("client") == client_id:
            amount = deal.get("amount_minor")
            context["deal"] = {
                "title": deal.get("title") or "",
                "amount": format_money(amount, deal.get("currency") or "")
                if amount is not None  # None: the user's role hides amounts
                else "",
                "stage": deal.get("stage_name") or "",
            }
    return context
