"""Click-to-call: the button next to phone numbers, through a scripted AMI server over TCP.

The app runs in a real uvicorn server on the test's event loop (the test client would
block that loop, and with it the scripted PBX the request talks to).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from plugins.telephony.tests.ami_server import ScriptedAmiServer
from plugins.telephony.tests.live_support import logged_in, serving
from tests.support import post


@pytest.fixture
async def pbx(db: None) -> AsyncIterator[ScriptedAmiServer]:
    server = await ScriptedAmiServer().start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def as_manager(app: Any, manager: dict[str, Any]) -> AsyncIterator[Any]:
    """Max Manager's browser session against a real server (shadows the test-client one)."""
    async with serving(app) as url, logged_in(url, "manager", "manager-password") as http:
        yield http


async def _configure(port: int, extensions: dict[str, int]) -> None:
    from core.sealed import seal
    from core.services.common import utcnow
    from plugins.telephony.config import SETTINGS_ID
    from plugins.telephony.tables import TelephonyExtension, TelephonySettings

    await TelephonySettings.insert(
        TelephonySettings(
            id=SETTINGS_ID,
            ami_host="127.0.0.1",
            ami_port=port,
            ami_username="crm",
            ami_secret=seal("s3cret"),
            updated_at=utcnow(),
        )
    )
    for extension, user_id in extensions.items():
        await TelephonyExtension.insert(TelephonyExtension(extension=extension, user=user_id))


def _result(html: str) -> tuple[str, str]:
    match = re.search(r'data-call-result="(\w+)">([^<]*)<', html)
    assert match, html
    return match.group(1), match.group(2)


async def test_card_shows_a_call_button_that_rings_my_phone(
    pbx: ScriptedAmiServer, as_manager: Any, manager: dict[str, Any]
) -> None:
    from core.services import clients

    await _configure(pbx.port, {"101": manager["id"]})
    client_id = await clients.create_client(
        {"name": "Call Me LLC", "phones": "8 912 345-67-89", "responsible": manager["id"]},
        manager["id"],
    )
    card = await as_manager.get(f"/clients/{client_id}")
    button = re.search(r'<button[^>]*data-phone-action="telephony.call"[^>]*>', card.text)
    assert button, "a call button next to the number"
    assert 'hx-post="/p/telephony/call"' in button.group(0)
    assert "+79123456789" in button.group(0)
    assert "Ringing your phone" in card.text, "shown while the PBX works"

    answer = await post(as_manager, "/p/telephony/call", {"number": "+79123456789"})
    assert answer.status_code == 200
    assert _result(answer.text) == ("ok", "Your phone answered; dialling the number.")
    originate = [a for a in pbx.actions if a.get("action", "").lower() == "originate"]
    assert len(originate) == 1
    assert originate[0]["channel"] == "PJSIP/101", "the user's own extension rings first"
    assert originate[0]["exten"] == "+79123456789", "then the PBX dials the number"
    assert originate[0]["async"] == "true"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("1", "Your phone 101 is busy."),
        ("2", "Your phone 101 is busy."),
        ("4", "Your phone 101 is not connected to the PBX."),
    ],
)
async def test_busy_or_unreachable_extension_is_reported(
    pbx: ScriptedAmiServer, as_manager: Any, manager: dict[str, Any], status: str, expected: str
) -> None:
    await _configure(pbx.port, {"101": manager["id"]})
    pbx.extension_status = status
    answer = await post(as_manager, "/p/telephony/call", {"number": "+79123456789"})
    assert _result(answer.text) == ("error", expected)
    assert not [a for a in pbx.actions if a.get("action", "").lower() == "originate"]


async def test_phone_that_does_not_pick_up(
    pbx: ScriptedAmiServer, as_manager: Any, manager: dict[str, Any]
) -> None:
    await _configure(pbx.port, {"101": manager["id"]})
    pbx.originate_response = ("Failure", "3")
    answer = await post(as_manager, "/p/telephony/call", {"number": "+79123456789"})
    assert _result(answer.text) == ("error", "Your phone 101 did not answer.")


async def test_pbx_not_connected(
    pbx: ScriptedAmiServer, as_manager: Any, manager: dict[str, Any]
) -> None:
    port = pbx.port
    await pbx.stop()  # nothing listens there any more
    await _configure(port, {"101": manager["id"]})
    answer = await post(as_manager, "/p/telephony/call", {"number": "+79123456789"})
    state, message = _result(answer.text)
    assert state == "error" and message.startswith("The PBX cannot be reached")


async def test_user_without_an_extension(
    pbx: ScriptedAmiServer, as_manager: Any, manager: dict[str, Any]
) -> None:
    await _configure(pbx.port, {})
    answer = await post(as_manager, "/p/telephony/call", {"number": "+79123456789"})
    assert _result(answer.text) == ("error", "No phone extension is assigned to you.")
    assert pbx.logins == 0


async def test_empty_number(as_manager: Any) -> None:
    answer = await post(as_manager, "/p/telephony/call", {"number": " "})
    assert _result(answer.text) == ("error", "No number to call.")


async def test_read_only_users_get_no_button_and_no_call(
    pbx: ScriptedAmiServer, app: Any, manager: dict[str, Any]
) -> None:
    from core.services import clients, users

    reader = await users.create_user("reader", "Rita Reader", "reader-password", role="readonly")
    await _configure(pbx.port, {"102": reader["id"]})
    client_id = await clients.create_client(
        {"name": "Read Only LLC", "phones": "+7 912 345-67-80", "responsible": manager["id"]},
        manager["id"],
    )
    async with serving(app) as url, logged_in(url, "reader", "reader-password") as http:
        card = await http.get(f"/clients/{client_id}")
        assert card.status_code == 200 and 'data-phone="+79123456780"' in card.text
        assert 'data-phone-action="telephony.call"' not in card.text
        refused = await post(http, "/p/telephony/call", {"number": "+79123456780"})
        assert refused.status_code == 403
    assert pbx.logins == 0
