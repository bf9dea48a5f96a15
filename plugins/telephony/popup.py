"""The screen pop: what the managers whose extensions ring see in their browser.

The call tracker calls `announce` on every state change of an external inbound call,
in whichever process owns the PBX connection; `core.live.publish` carries the
HTML to the users' tabs in any web process. Each user's pop-up is rendered as that
user: a client they may not see is shown as "a colleague's client", without name,
deals or history.

The pop-up is one element per call (``#call-<linkedid>``) pushed as an out-of-band
swap: a state change replaces it in place, and the browser appends it to
``#live-popups`` when the tab did not have it yet (kartoteka.js). When a colleague
answers, the others get a delete swap; when the call ends, the pop-up shows the
outcome and fades out.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable
from functools import partial
from typing import Any

from core import access, i18n, live
from core.default_hooks import CLIENTS_EDIT, CLIENTS_VIEW
from core.runtime import get_runtime
from core.services import clients, deals, timeline
from core.services.common import NotFound
from core.tables import User
from core.web.templating import render_fragment
from core.web.timeline import timeline_templates
from plugins.telephony.model import CallView

log = logging.getLogger(__name__)

OPEN_DEALS_SHOWN = 3


def element_id(linkedid: str) -> str:
    """The pop-up's HTML id: the PBX's Linkedid (``1700000000.42``) made id-safe."""
    return "call-" + re.sub(r"[^A-Za-z0-9_-]", "-", linkedid)


_in_progress: dict[str, asyncio.Task[None]] = {}
"""The latest announcement of each call still being rendered or sent."""


async def announce(view: CallView) -> None:
    """Show, update or remove the call's pop-up in the browsers of the users concerned.

    Returns at once: rendering (a dozen queries per user) runs beside the call
    tracker, so fifty calls ringing together do not queue behind each other's
    pop-ups. The announcements of one call still go out in order.
    """
    previous = _in_progress.get(view.linkedid)
    task = asyncio.get_running_loop().create_task(_announce_after(previous, view))
    _in_progress[view.linkedid] = task
    task.add_done_callback(partial(_forget, view.linkedid))


def _forget(linkedid: str, task: asyncio.Task[None]) -> None:
    if _in_progress.get(linkedid) is task:
        del _in_progress[linkedid]


async def _announce_after(previous: asyncio.Task[None] | None, view: CallView) -> None:
    if previous is not None:
        await asyncio.gather(previous, return_exceptions=True)
    try:
        await announce_now(view)
    except Exception:  # a failed screen pop must never stop the next ones
        log.exception("telephony: screen pop of call %s failed", view.linkedid)


async def announce_now(view: CallView) -> None:
    """`announce`, done before returning (tests and tools that need it finished)."""
    ringing = set(view.ringing_user_ids)
    answerer = view.answered_by_user_id
    if view.state == "ringing":
        await _show(view, ringing)
    elif view.state == "answered":
        await _remove(view, ringing - {answerer})
        await _show(view, {answerer} if answerer else set())
    else:  # ended: the answerer (or, for a missed call, everyone it rang) sees the outcome
        await _show(view, {answerer} if answerer else ringing)


async def _remove(view: CallView, user_ids: Iterable[int]) -> None:
    html = render_fragment("telephony/popup_remove.html", popup_id=element_id(view.linkedid))
    await live.publish(user_ids, live.SWAP, html)


async def _show(view: CallView, user_ids: set[int]) -> None:
    if not user_ids:
        return
    users = await User.select(
        *User.all_columns(exclude=[User.password_hash, User.totp_secret])
    ).where(User.id.is_in(sorted(user_ids)) & User.active.eq(True))
    for user in users:
        try:
            html = await render_for(view, user)
        except Exception:  # one user's pop-up must not stop the others'
            log.exception("telephony: pop-up for user %s failed", user["id"])
            continue
        await live.publish([user["id"]], live.SWAP, html)


async def render_for(view: CallView, user: dict[str, Any]) -> str:
    """The pop-up HTML as this user may see it, in their language."""
    settings = get_runtime().settings
    me = await access.for_user(user)
    locale_token = i18n.current_locale.set(user.get("locale") or settings.default_locale)
    tz_token = i18n.current_timezone.set(settings.timezone)
    try:
        with access.acting_as(me):
            context = await _client_context(view.client_id, me)
            return render_fragment(
                "telephony/popup.html",
                view=view,
                popup_id=element_id(view.linkedid),
                is_answerer=view.answered_by_user_id == user["id"],
                can_create=me.can(CLIENTS_EDIT),
                timeline_templates=timeline_templates(),
                **context,
            )
    finally:
        i18n.current_locale.reset(locale_token)
        i18n.current_timezone.reset(tz_token)


async def _client_context(client_id: int | None, me: access.Access) -> dict[str, Any]:
    """The matched client with open deals and last interaction, if this user may see it."""
    empty: dict[str, Any] = {"client": None, "open_deals": [], "last_entry": None}
    if client_id is None:
        return {**empty, "colleagues_client": False}
    if not me.can(CLIENTS_VIEW):
        return {**empty, "colleagues_client": True}
    try:
        client = await clients.get_client(client_id)
    except NotFound:  # deleted meanwhile, or someone else's client
        return {**empty, "colleagues_client": True}
    open_deals = [d for d in await deals.for_client(client_id) if d["stage_outcome"] == "open"]
    entries, _cursor = await timeline.page(client_id, size=1)
    return {
        "client": client,
        "colleagues_client": False,
        "open_deals": open_deals[:OPEN_DEALS_SHOWN],
        "more_deals": max(0, len(open_deals) - OPEN_DEALS_SHOWN),
        "last_entry": entries[0] if entries else None,
    }
