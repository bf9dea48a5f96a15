"""The screen pop (plugins/telephony/popup.py): who gets which pop-up, scoped as them."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from core import live
from plugins.telephony import popup
from plugins.telephony.model import CallView

NUMBER = "+79123456789"


@pytest.fixture
async def office(db: None) -> dict[str, Any]:
    """Ann owns a client (with a deal and a note); Bob is another manager; Hugo a head."""
    from core.services import clients, deals, users

    await deals.ensure_default_pipeline()
    ann = await users.create_user("ann", "Ann Manager", "ann-password", role="manager")
    bob = await users.create_user("bob", "Bob Manager", "bob-password", role="manager")
    client_id = await clients.create_client(
        {"name": "Romashka LLC", "phones": "8 (912) 345-67-89", "responsible": ann["id"]},
        ann["id"],
    )
    await deals.create_deal(
        {"title": "Forklift lease", "client": client_id, "amount": "150000"}, ann["id"]
    )
    await clients.add_note(client_id, "Asked for a discount", ann["id"])
    return {"ann": ann["id"], "bob": bob["id"], "client": client_id}


def _view(office: dict[str, Any], state: str = "ringing", **changes: Any) -> CallView:
    values: dict[str, Any] = {
        "linkedid": "1700000000.42",
        "direction": "inbound",
        "external_number": NUMBER,
        "state": state,
        "ringing_user_ids": (office["ann"], office["bob"]),
        "answered_by_user_id": None,
        "client_id": office["client"],
        "started_at": datetime(2026, 11, 23, 9, 30, tzinfo=UTC),
    }
    values.update(changes)
    return CallView(**values)


async def _received(tab: live.Subscription) -> str:
    message = await tab.next(timeout=5)
    assert message is not None, "no pop-up arrived"
    assert message.event == live.SWAP
    return message.html


async def test_ringing_shows_the_client_to_its_manager_only(office: dict[str, Any]) -> None:
    async with live.subscribe(office["ann"]) as ann, live.subscribe(office["bob"]) as bob:
        await popup.announce(_view(office))
        mine, theirs = await _received(ann), await _received(bob)
    assert 'id="call-1700000000-42"' in mine and 'hx-swap-oob="true"' in mine
    assert "data-live-popup" in mine and 'data-call-state="ringing"' in mine
    assert "Romashka LLC" in mine
    assert f'href="/clients/{office["client"]}"' in mine
    assert "Forklift lease" in mine
    assert "Asked for a discount" in mine, "the last interaction"
    # Bob may not see Ann's client: no name, no deal, no history, no "new client" offer.
    assert 'id="call-1700000000-42"' in theirs
    assert "A colleague&#39;s client" in theirs or "A colleague's client" in theirs
    for secret in ("Romashka", "Forklift", "discount", f"/clients/{office['client']}"):
        assert secret not in theirs
    assert "/clients/new" not in theirs


async def test_a_head_of_sales_sees_the_client(office: dict[str, Any]) -> None:
    """Scope comes from the receiving user's role, not from the PBX process's system access."""
    from core.services import users

    admin = await users.create_user("root", "Root Admin", "root-password", role="admin")
    async with live.subscribe(admin["id"]) as tab:
        await popup.announce(_view(office, ringing_user_ids=(admin["id"],)))
        assert "Romashka LLC" in await _received(tab)


async def test_unknown_number_offers_a_prefilled_new_client(
    office: dict[str, Any], as_manager: Any, manager: dict[str, Any]
) -> None:
    async with live.subscribe(manager["id"]) as tab:
        await popup.announce(
            _view(office, client_id=None, ringing_user_ids=(manager["id"],), linkedid="9.1")
        )
        html = await _received(tab)
    assert "Unknown number" in html
    link = re.search(r'href="(/clients/new\?phone=[^"]+)"', html)
    assert link, html
    form = await as_manager.get(link.group(1).replace("&amp;", "&"))
    assert form.status_code == 200
    textarea = re.search(r'<textarea id="f-phones"[^>]*>([^<]*)</textarea>', form.text)
    assert textarea and textarea.group(1) == NUMBER


async def test_answer_updates_it_for_the_answerer_and_removes_it_for_others(
    office: dict[str, Any],
) -> None:
    async with live.subscribe(office["ann"]) as ann, live.subscribe(office["bob"]) as bob:
        await popup.announce(_view(office, "answered", answered_by_user_id=office["bob"]))
        removed, answered = await _received(ann), await _received(bob)
        assert removed.strip().endswith('<div id="call-1700000000-42" hx-swap-oob="delete"></div>')
        assert 'data-call-state="answered"' in answered and "You answered" in answered

        await popup.announce(_view(office, "ended", answered_by_user_id=office["bob"]))
        ended = await _received(bob)
        assert 'data-call-state="ended"' in ended and "popup-fading" in ended
        assert "Call ended" in ended
        assert await ann.next(timeout=0.3) is None, "Ann's pop-up was already gone"


async def test_missed_call_shows_the_outcome_to_everyone_it_rang(office: dict[str, Any]) -> None:
    async with live.subscribe(office["ann"]) as ann, live.subscribe(office["bob"]) as bob:
        await popup.announce(_view(office, "ended"))
        for tab in (ann, bob):
            html = await _received(tab)
            assert "Missed call" in html and "popup-fading" in html


async def test_inactive_users_get_nothing(office: dict[str, Any]) -> None:
    from core.tables import User

    await User.update({User.active: False}).where(User.id == office["bob"])
    async with live.subscribe(office["bob"]) as bob:
        await popup.announce(_view(office))
        assert await bob.next(timeout=0.3) is None


async def test_popup_is_in_the_users_language(office: dict[str, Any]) -> None:
    """Rendered per user with their locale (the PBX process has no request)."""
    from core import i18n
    from core.tables import User

    await User.update({User.locale: "ru"}).where(User.id == office["ann"])
    seen: list[str] = []
    original = i18n.gettext

    def spy(message: str, **variables: object) -> str:
        seen.append(i18n.current_locale.get())
        return original(message, **variables)

    i18n_gettext = pytest.MonkeyPatch()
    i18n_gettext.setattr(i18n, "gettext", spy)
    try:
        from core.web import templating

        templating._fragments = None  # the environment binds gettext when built
        user = await User.select().where(User.id == office["ann"]).first()
        await popup.render_for(_view(office), user)
    finally:
        i18n_gettext.undo()
        templating._fragments = None
    assert seen and set(seen) == {"ru"}


async def test_announcements_of_a_call_arrive_in_order(office: dict[str, Any]) -> None:
    """announce() returns before rendering; one call's states must still not overtake."""
    ann = office["ann"]
    async with live.subscribe(ann) as tab:
        for _ in range(3):
            await popup.announce(_view(office, ringing_user_ids=(ann,)))
            await popup.announce(_view(office, "answered", answered_by_user_id=ann))
            await popup.announce(_view(office, "ended", answered_by_user_id=ann))
        states = [re.search(r'data-call-state="(\w+)"', await _received(tab)) for _ in range(9)]
    assert [m.group(1) for m in states if m] == ["ringing", "answered", "ended"] * 3
