"""Click-to-call: the call button next to every phone number (core hook ``phone_actions``).

The button POSTs the number here; `plugins.telephony.service.originate` rings the
user's own extension, then dials the number. The answer is a short status shown
next to the number: htmx shows "Ringing your phone…" while the PBX works (the
request lasts until the phone is picked up or gives up), then the outcome.
"""

from __future__ import annotations

from litestar import Request, post
from litestar.response import Template

from core.access import needs
from core.hooktypes import Permission, PhoneAction
from core.i18n import _
from core.i18n import lazy_gettext as _l
from core.web.controllers.base import current_user, form_data, render
from plugins.telephony import service

MAKE_CALLS = "telephony.calls.make"


def permission() -> Permission:
    return Permission(
        MAKE_CALLS, _l("Call numbers from the CRM (click-to-call)"), ("admin", "head", "manager")
    )


def phone_action() -> PhoneAction:
    return PhoneAction(
        key="telephony.call",
        label=_l("Call from my phone"),
        icon="📞",
        url="/p/telephony/call",
        permission=MAKE_CALLS,
        pending=_l("Ringing your phone…"),
        order=10,
    )


@post("/call", opt=needs(MAKE_CALLS), status_code=200)
async def call(request: Request) -> Template:
    """Answers 200 with the outcome either way: a busy phone is news, not an HTTP error."""
    number = str((await form_data(request)).get("number", "")).strip()
    if not number:
        ok, message = False, _("No number to call.")
    else:
        result = await service.originate(int(current_user(request)["id"]), number)
        ok, message = result.ok, result.message
    return render(request, "telephony/call_result.html", ok=ok, message=message)


HANDLERS = [call]
