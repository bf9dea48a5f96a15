"""Deals, pipelines and stages: service rules and the web pages."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import field_error, post


@pytest.fixture
def captured() -> Iterator[list[Any]]:
    from core import events

    seen: list[Any] = []
    events.set_dispatcher(seen.append)
    yield seen
    events.set_dispatcher(None)


@pytest.fixture
async def pipeline(db: None) -> dict[str, Any]:
    from core.services import deals

    await deals.ensure_default_pipeline()
    return (await deals.list_pipelines())[0]


@pytest.fixture
async def company(manager: dict[str, Any]) -> int:
    from core.services import clients

    return await clients.create_client(
        {"kind": "company", "name": "ООО «Ромашка»", "responsible": manager["id"]}, manager["id"]
    )


def _stage(pipeline: dict[str, Any], name: str) -> int:
    return next(s["id"] for s in pipeline["stages"] if s["name"] == name)


async def _deal(manager: dict[str, Any], client_id: int, **extra: Any) -> int:
    from core.services import deals

    data = {"title": "Поставка", "client": client_id, "amount": "1500.50", **extra}
    return await deals.create_deal(data, manager["id"])


# --- pipelines ----------------------------------------------------------------------------


async def test_default_pipeline(db: None) -> None:
    from core.services import deals

    assert await deals.ensure_default_pipeline()
    assert await deals.ensure_default_pipeline() is None  # only once
    [sales] = await deals.list_pipelines()
    assert sales["name"] == "Sales"
    assert [(s["name"], s["outcome"]) for s in sales["stages"]] == [
        ("New", "open"),
        ("Qualified", "open"),
        ("Proposal", "open"),
        ("Negotiation", "open"),
        ("Won", "won"),
        ("Lost", "lost"),
    ]


async def test_stage_admin_rules(pipeline, manager, company) -> None:
    from core.services import deals
    from core.validation import ValidationError

    pid = pipeline["id"]
    new_id = await deals.add_stage(pid, "Demo", "open")
    stages = (await deals.get_pipeline(pid))["stages"]
    assert [s["name"] for s in stages].index("Demo") == 4  # before the terminal stages
    await deals.rename_stage(new_id, "Demo call")
    ids = [s["id"] for s in stages]
    await deals.reorder_stages(pid, list(reversed(ids)))
    assert [s["id"] for s in (await deals.get_pipeline(pid))["stages"]] == list(reversed(ids))
    with pytest.raises(ValidationError) as exc:
        await deals.reorder_stages(pid, ids[:-1])
    assert "stages" in exc.value.errors
    # a used stage cannot be deleted
    await _deal(manager, company, stage=new_id)
    with pytest.raises(ValidationError) as exc:
        await deals.delete_stage(new_id)
    assert "deal" in exc.value.errors["stage"]
    # the only won / lost stage cannot be deleted
    with pytest.raises(ValidationError):
        await deals.delete_stage(_stage(pipeline, "Won"))
    with pytest.raises(ValidationError):
        await deals.delete_stage(_stage(pipeline, "Lost"))
    await deals.delete_stage(_stage(pipeline, "Qualified"))
    names = [s["name"] for s in (await deals.get_pipeline(pid))["stages"]]
    assert "Qualified" not in names
    with pytest.raises(ValidationError):
        await deals.add_stage(pid, "X", "maybe")
    other = await deals.create_pipeline("Partners")
    outcomes = [s["outcome"] for s in (await deals.get_pipeline(other))["stages"]]
    assert outcomes == ["open", "won", "lost"]


# --- create -------------------------------------------------------------------------------


async def test_create_deal(pipeline, manager, company, captured) -> None:
    from core import events
    from core.services import deals, timeline

    deal_id = await _deal(manager, company)
    deal = await deals.get_deal(deal_id)
    assert deal["amount_minor"] == 150050
    assert deal["currency"] == "RUB"
    assert deal["stage"] == _stage(pipeline, "New")
    assert deal["client_name"] == "ООО «Ромашка»"
    assert deal["responsible_name"] == "Max Manager"
    assert deal["pipeline_name"] == "Sales"
    entries, _cursor = await timeline.page(company, deal_id=deal_id)
    assert entries[0]["kind"] == "deal.created"
    assert entries[0]["payload"] == {"title": "Поставка", "amount_minor": 150050, "currency": "RUB"}
    assert any(isinstance(e, events.DealCreated) and e.deal_id == deal_id for e in captured)
    [listed] = await deals.for_client(company)
    assert listed["stage_name"] == "New"


async def test_create_deal_invalid(pipeline, manager, company, db) -> None:
    from core.services import deals
    from core.validation import ValidationError

    other = await deals.get_pipeline(await deals.create_pipeline("Partners"))
    cases = [
        ({"amount": "12,3,4"}, "amount"),
        ({"client": 999999}, "client"),
        ({"title": ""}, "title"),
        ({"title": "x" * 256}, "title"),
        ({"stage": other["stages"][0]["id"]}, "stage"),
        ({"stage": 999999}, "stage"),
        ({"currency": "RUBLES"}, "currency"),
        ({"responsible": 999999}, "responsible"),
        ({"expected_close": "tomorrow"}, "expected_close"),
    ]
    for extra, field in cases:
        with pytest.raises(ValidationError) as exc:
            await _deal(manager, company, **extra)
        assert field in exc.value.errors, (extra, exc.value.errors)
    from core.services import clients

    await clients.delete_client(company, manager["id"])
    with pytest.raises(ValidationError) as exc:
        await _deal(manager, company)
    assert "client" in exc.value.errors


# --- moving -------------------------------------------------------------------------------


async def test_move_to_next_stage(pipeline, manager, company, captured) -> None:
    from core import events
    from core.services import deals, timeline

    deal_id = await _deal(manager, company)
    captured.clear()
    assert await deals.move_deal(deal_id, _stage(pipeline, "Qualified"), manager["id"])
    entries, _cursor = await timeline.page(company, deal_id=deal_id)
    assert entries[0]["kind"] == "deal.stage_changed"
    assert entries[0]["payload"] == {
        "title": "Поставка",
        "from_stage": "New",
        "to_stage": "Qualified",
        "outcome": "open",
        "lost_reason": "",
    }
    [event] = captured
    assert isinstance(event, events.DealStageChanged)
    assert (event.from_stage_id, event.to_stage_id) == (
        _stage(pipeline, "New"),
        _stage(pipeline, "Qualified"),
    )
    # the same stage again: nothing happens
    captured.clear()
    assert not await deals.move_deal(deal_id, _stage(pipeline, "Qualified"), manager["id"])
    assert captured == []


async def test_move_to_won_and_reopen(pipeline, manager, company, captured) -> None:
    from core import events
    from core.services import deals

    deal_id = await _deal(manager, company)
    await deals.move_deal(deal_id, _stage(pipeline, "Won"), manager["id"])
    deal = await deals.get_deal(deal_id)
    assert deal["closed_at"] is not None
    assert deal["stage_outcome"] == "won"
    assert any(isinstance(e, events.DealWon) for e in captured)
    await deals.move_deal(deal_id, _stage(pipeline, "Proposal"), manager["id"])
    assert (await deals.get_deal(deal_id))["closed_at"] is None


async def test_move_to_lost_needs_reason(pipeline, manager, company, captured) -> None:
    from core import events
    from core.services import deals
    from core.validation import ValidationError

    deal_id = await _deal(manager, company)
    lost = _stage(pipeline, "Lost")
    with pytest.raises(ValidationError) as exc:
        await deals.move_deal(deal_id, lost, manager["id"])
    assert "lost_reason" in exc.value.errors
    with pytest.raises(ValidationError) as exc:
        await deals.move_deal(deal_id, lost, manager["id"], "x" * 501)
    assert "lost_reason" in exc.value.errors
    await deals.move_deal(deal_id, lost, manager["id"], "Too expensive")
    deal = await deals.get_deal(deal_id)
    assert deal["lost_reason"] == "Too expensive"
    assert deal["closed_at"] is not None
    lost_events = [e for e in captured if isinstance(e, events.DealLost)]
    assert lost_events[0].reason == "Too expensive"


async def test_move_invalid_stage(pipeline, manager, company) -> None:
    from core.services import deals
    from core.validation import ValidationError

    deal_id = await _deal(manager, company)
    other = await deals.get_pipeline(await deals.create_pipeline("Partners"))
    with pytest.raises(ValidationError) as exc:
        await deals.move_deal(deal_id, 999999, manager["id"])
    assert "does not exist" in exc.value.errors["stage"]
    with pytest.raises(ValidationError) as exc:
        await deals.move_deal(deal_id, "abc", manager["id"])
    assert "stage" in exc.value.errors
    with pytest.raises(ValidationError) as exc:
        await deals.move_deal(deal_id, other["stages"][0]["id"], manager["id"])
    assert "another pipeline" in exc.value.errors["stage"]


# --- board and list -----------------------------------------------------------------------


async def test_board_and_list(pipeline, manager, company, admin) -> None:
    from core.services import deals
    from core.services.deals import DealQuery

    a = await _deal(manager, company, title="Alpha", amount="100")
    await _deal(manager, company, title="Beta", amount="250", responsible=admin["id"])
    c = await _deal(manager, company, title="Gamma", amount="10")
    await deals.move_deal(c, _stage(pipeline, "Won"), manager["id"])
    board = await deals.board(pipeline["id"])
    new = next(s for s in board["stages"] if s["name"] == "New")
    assert new["count"] == 2
    assert new["totals"] == [("RUB", 35000)]
    assert new["next_stage_id"] == _stage(pipeline, "Qualified")
    negotiation = next(s for s in board["stages"] if s["name"] == "Negotiation")
    assert negotiation["next_stage_id"] == _stage(pipeline, "Won")
    mine = await deals.board(pipeline["id"], responsible=manager["id"])
    assert next(s for s in mine["stages"] if s["name"] == "New")["count"] == 1

    async def titles(**filters: Any) -> list[str]:
        rows, _cursor = await deals.list_deals(DealQuery(**filters))
        return [r["title"] for r in rows]

    assert await titles() == ["Gamma", "Beta", "Alpha"]
    assert await titles(status="won") == ["Gamma"]
    assert await titles(status="open") == ["Beta", "Alpha"]
    assert await titles(responsible=admin["id"]) == ["Beta"]
    assert await titles(search="alp") == ["Alpha"]
    assert await titles(stage=_stage(pipeline, "New"), client=company) == ["Beta", "Alpha"]
    rows, cursor = await deals.list_deals(DealQuery(size=2))
    assert cursor and [r["title"] for r in rows] == ["Gamma", "Beta"]
    assert await titles(size=2, cursor=cursor) == ["Alpha"]
    await deals.delete_deal(a, manager["id"])
    assert await titles() == ["Gamma", "Beta"]
    assert [d["title"] for d in await deals.for_client(company)] == ["Beta", "Gamma"]


# --- web ----------------------------------------------------------------------------------


async def test_web_create_and_card(as_manager, pipeline, manager, company) -> None:
    r = await as_manager.get(f"/deals/new?client={company}")
    assert r.status_code == 200 and "Ромашка" in r.text
    r = await post(
        as_manager,
        "/deals",
        {"title": "Поставка", "client": company, "amount": "abc", "responsible": manager["id"]},
    )
    assert r.status_code == 422
    assert field_error(r.text, "amount")
    r = await post(
        as_manager,
        "/deals",
        {"title": "x" * 300, "client": company, "amount": "10", "responsible": manager["id"]},
    )
    assert r.status_code == 422 and field_error(r.text, "title")
    r = await post(
        as_manager,
        "/deals",
        {"title": "Поставка", "client": company, "amount": "1500", "responsible": manager["id"]},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    url = r.headers["location"]
    card = await as_manager.get(url)
    assert card.status_code == 200 and "Поставка" in card.text and "1,500.00" in card.text
    client_card = await as_manager.get(f"/clients/{company}")
    assert url in client_card.text
    edit = await post(
        as_manager,
        url + "/edit",
        {"title": "Поставка 2", "amount": "2000", "currency": "usd", "responsible": manager["id"]},
        follow_redirects=False,
    )
    assert edit.status_code == 303, edit.text
    assert "Поставка 2" in (await as_manager.get(url)).text
    r = await post(as_manager, url + "/delete", follow_redirects=False)
    assert r.status_code == 303
    gone = await as_manager.get(url)
    assert gone.status_code == 404


async def test_web_board_and_moves(as_manager, pipeline, manager, company) -> None:
    deal_id = await _deal(manager, company)
    board = await as_manager.get("/deals")
    assert board.status_code == 200
    assert 'id="board"' in board.text
    assert f'data-stage-id="{_stage(pipeline, "New")}"' in board.text
    assert f'data-move-url="/deals/{deal_id}/move"' in board.text
    assert "1,500.50" in board.text
    htmx = {"hx-request": "true", "hx-target": "board"}
    r = await post(
        as_manager,
        f"/deals/{deal_id}/move",
        {"stage": _stage(pipeline, "Qualified")},
        headers=htmx,
    )
    assert r.status_code == 200 and r.text.lstrip().startswith('<div id="board"')
    # the board's own "→" and drops ask for the two changed columns only, out of band
    new, qualified, proposal = (_stage(pipeline, n) for n in ("New", "Qualified", "Proposal"))
    r = await post(
        as_manager,
        f"/deals/{deal_id}/move",
        {"stage": proposal, "refresh": "columns"},
        headers=htmx,
    )
    assert r.status_code == 200 and r.headers["hx-reswap"] == "none"
    columns = re.findall(r'<div class="column[^>]*id="stage-(\d+)"[^>]*hx-swap-oob="true"', r.text)
    assert columns == [str(qualified), str(proposal)]
    assert '<div id="board-notice" hx-swap-oob="true">' in r.text
    assert f'data-stage-id="{new}"' not in r.text and 'id="board"' not in r.text
    proposal_column = r.text.split(f'id="stage-{proposal}"')[1]
    assert f'id="deal-{deal_id}"' in proposal_column
    assert f'id="deal-{deal_id}"' not in r.text.split(f'id="stage-{proposal}"')[0]
    r = await post(
        as_manager,
        f"/deals/{deal_id}/move",
        {"stage": qualified, "refresh": "columns"},
        headers=htmx,
    )
    assert r.status_code == 200 and f'id="deal-{deal_id}"' in r.text.split('id="stage-')[1]
    r = await post(
        as_manager, f"/deals/{deal_id}/move", {"stage": 999999, "refresh": "columns"}, headers=htmx
    )
    assert r.status_code == 422 and r.text.lstrip().startswith('<div id="board"')
    assert "hx-reswap" not in r.headers
    r = await post(as_manager, f"/deals/{deal_id}/move", {"stage": 999999}, headers=htmx)
    assert r.status_code == 422 and 'id="board-error"' in r.text
    r = await post(as_manager, f"/deals/{deal_id}/move", {"stage": "nonsense"}, headers=htmx)
    assert r.status_code == 422
    from core.services import deals

    other = await deals.get_pipeline(await deals.create_pipeline("Partners"))
    r = await post(
        as_manager, f"/deals/{deal_id}/move", {"stage": other["stages"][0]["id"]}, headers=htmx
    )
    assert r.status_code == 422 and "another pipeline" in r.text
    lost = _stage(pipeline, "Lost")
    r = await post(as_manager, f"/deals/{deal_id}/move", {"stage": lost}, headers=htmx)
    assert r.status_code == 422 and field_error(r.text, "lost_reason")
    r = await post(
        as_manager,
        f"/deals/{deal_id}/move",
        {"stage": lost, "lost_reason": "Too expensive"},
        headers=htmx,
    )
    assert r.status_code == 200
    assert (await deals.get_deal(deal_id))["stage"] == lost
    card = await as_manager.get(f"/deals/{deal_id}")
    assert "Too expensive" in card.text and "Qualified" in card.text
    # from the card, without htmx
    r = await post(
        as_manager,
        f"/deals/{deal_id}/move",
        {"stage": _stage(pipeline, "New"), "from": "card"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    r = await post(as_manager, f"/deals/{deal_id}/move", {"stage": lost, "from": "card"})
    assert r.status_code == 422 and field_error(r.text, "lost_reason")


async def test_web_list(as_manager, pipeline, manager, company) -> None:
    await _deal(manager, company, title="Alpha")
    await _deal(manager, company, title="Beta")
    r = await as_manager.get("/deals/list?q=alp")
    assert r.status_code == 200 and "Alpha" in r.text and "Beta" not in r.text
    r = await as_manager.get("/deals/list?status=won")
    assert "Alpha" not in r.text


async def test_admin_pipelines(as_admin, pipeline) -> None:
    r = await as_admin.get("/admin/pipelines")
    assert r.status_code == 200 and "Negotiation" in r.text
    r = await post(as_admin, "/admin/pipelines", {"name": "Partners"}, follow_redirects=False)
    assert r.status_code == 303
    r = await post(as_admin, "/admin/pipelines", {"name": ""})
    assert r.status_code == 422 and field_error(r.text, "name")
    r = await post(
        as_admin,
        f"/admin/pipelines/{pipeline['id']}/stages",
        {"name": "Demo", "outcome": "open"},
        headers={"hx-request": "true"},
    )
    assert r.status_code == 200 and "Demo" in r.text
    won = _stage(pipeline, "Won")
    r = await post(as_admin, f"/admin/stages/{won}/delete")
    assert r.status_code == 422 and "won stage" in r.text
    r = await post(
        as_admin, f"/admin/stages/{won}/move", {"direction": "up"}, follow_redirects=False
    )
    assert r.status_code == 303
    from core.services import deals

    names = [s["name"] for s in (await deals.get_pipeline(pipeline["id"]))["stages"]]
    assert names.index("Won") < names.index("Demo")


async def test_admin_forbidden_for_manager(as_manager, pipeline) -> None:
    r = await as_manager.get("/admin/pipelines")
    assert r.status_code == 403


class _DealTimelineKinds:
    """What core/default_hooks.py registers for deals (registered here until it does)."""

    @staticmethod
    def kinds() -> list[Any]:
        from core.hooktypes import TimelineKind

        changed = "core/timeline/deal_changed.html"
        return [
            TimelineKind("deal.created", "core/timeline/deal_created.html", "Deal created", "₽"),
            TimelineKind(
                "deal.stage_changed", "core/timeline/deal_stage_changed.html", "Deal stage", "→"
            ),
            TimelineKind("deal.updated", changed, "Deal changed", "✎"),
            TimelineKind("deal.deleted", changed, "Deal deleted", "✕"),
        ]


@pytest.fixture
def deal_kinds(runtime: Any) -> Iterator[None]:
    from core.hookspecs import hookimpl

    registered = {k.kind for k in runtime.plugins.collect("timeline_kinds")}
    if "deal.stage_changed" in registered:
        yield
        return

    class Impl:
        @hookimpl
        def timeline_kinds(self) -> list[Any]:
            return _DealTimelineKinds.kinds()

    impl = Impl()
    runtime.plugins.pm.register(impl, name="test-deal-kinds")
    try:
        yield
    finally:
        runtime.plugins.pm.unregister(impl)


async def test_timeline_templates(as_manager, deal_kinds, pipeline, manager, company) -> None:
    from core.services import deals

    deal_id = await _deal(manager, company, title="Большая поставка")
    await deals.move_deal(deal_id, _stage(pipeline, "Qualified"), manager["id"])
    await deals.move_deal(deal_id, _stage(pipeline, "Lost"), manager["id"], "Бюджет урезали")
    card = (await as_manager.get(f"/clients/{company}")).text
    assert "New → <strong>Qualified</strong>" in card
    assert "Бюджет урезали" in card
    assert f'href="/deals/{deal_id}">«Большая поставка»' in card
    deal_card = (await as_manager.get(f"/deals/{deal_id}")).text
    assert "Qualified → <strong>Lost</strong>" in deal_card
    assert "1,500.50" in card


# --- board totals ---------------------------------------------------------------------------


async def _totals_match_the_deals() -> dict[tuple[int, int, str], tuple[int, int]]:
    """core_deal_total as kept by the services must equal a count from scratch."""
    from core.services import deal_totals
    from core.tables import DealTotal

    kept = {
        (r["stage"], r["responsible"], r["currency"]): (r["deals"], r["amount_minor"])
        for r in await DealTotal.select()
        if r["deals"] or r["amount_minor"]
    }
    counted = {
        key: (deals, amount) for key, deals, amount in await deal_totals.of_deals("1 = {}", 1)
    }
    assert kept == counted
    return kept


async def test_board_totals_follow_every_change(pipeline, company, manager, admin) -> None:
    from core import access
    from core.services import clients, deals, user_admin

    first = await _deal(manager, company)
    second = await _deal(manager, company, amount="100", currency="EUR")
    await _totals_match_the_deals()
    await deals.update_deal(
        first, {"title": "Поставка", "client": company, "amount": "2000"}, manager["id"]
    )
    await deals.move_deal(second, _stage(pipeline, "Proposal"), manager["id"])
    await _totals_match_the_deals()
    board = await deals.board(pipeline["id"])
    proposal = next(s for s in board["stages"] if s["name"] == "Proposal")
    assert proposal["count"] == 1 and proposal["totals"] == [("EUR", 10000)]
    await deals.delete_deal(first, manager["id"])
    await _totals_match_the_deals()
    other = await clients.create_client(
        {"kind": "person", "name": "Пётр", "responsible": manager["id"]}, manager["id"]
    )
    await _deal(manager, other, amount="7")
    with access.acting_as(await access.for_user(admin)):
        await user_admin.deactivate(manager["id"], {"receiver": str(admin["id"])})
    kept = await _totals_match_the_deals()
    assert {owner for _stage_id, owner, _cur in kept} == {admin["id"]}
    await clients.delete_client(company, admin["id"])
    kept = await _totals_match_the_deals()
    assert sum(deals for deals, _amount in kept.values()) == 1  # only the other client's deal
