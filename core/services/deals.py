"""Deals, the pipelines they move through and the stages of those pipelines.

Every pipeline keeps at least one open stage and one ``won`` and one ``lost``
terminal stage, so a deal can always be worked on, won and lost. Stage moves are
validated here (never trusted from the browser) and recorded on the timeline.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from core import access, events
from core.db import fetch
from core.i18n import _
from core.runtime import get_runtime
from core.services import audit, deal_totals, timeline
from core.services.common import NotFound, as_utc, utcnow, write
from core.tables import Client, Deal, Pipeline, Stage, User
from core.validation import (
    FieldError,
    Form,
    ValidationError,
    choice,
    integer,
    money_minor,
    optional_date,
    text,
)

OUTCOMES = ("open", "won", "lost")
STATUSES = OUTCOMES
BOARD_CAP = 20
"""Deals shown per column; the rest are counted and one click away in the list (a
column of hundreds of cards is not read, only rendered)."""
PAGE_SIZE = 50
HIDEABLE = {"deal.amount": ("amount_minor",)}
"""Field codes an admin may hide from a role, and the row keys each one blanks."""


# --- pipelines and stages ---------------------------------------------------------------


def _name(data: dict[str, Any], max_length: int = 128) -> str:
    form = Form(data)
    form.field("name", text(max_length, required=True))
    form.raise_if_invalid()
    return form.cleaned["name"]


async def _stages(pipeline_id: int) -> list[dict[str, Any]]:
    return (
        await Stage.select(Stage.id, Stage.pipeline, Stage.name, Stage.position, Stage.outcome)
        .where(Stage.pipeline == pipeline_id)
        .order_by(Stage.position)
        .order_by(Stage.id)
    )


async def get_pipeline(pipeline_id: int) -> dict[str, Any]:
    row = await Pipeline.select().where(Pipeline.id == pipeline_id).first()
    if row is None:
        raise NotFound(pipeline_id)
    row["stages"] = await _stages(pipeline_id)
    return row


async def list_pipelines(include_archived: bool = False) -> list[dict[str, Any]]:
    """Pipelines in display order, each with its stages ordered by position."""
    query = Pipeline.select()
    if not include_archived:
        query = query.where(Pipeline.archived.eq(False))
    pipelines = await query.order_by(Pipeline.position).order_by(Pipeline.id)
    if not pipelines:
        return []
    stages = (
        await Stage.select(Stage.id, Stage.pipeline, Stage.name, Stage.position, Stage.outcome)
        .where(Stage.pipeline.is_in([p["id"] for p in pipelines]))
        .order_by(Stage.position)
        .order_by(Stage.id)
    )
    for pipeline in pipelines:
        pipeline["stages"] = [s for s in stages if s["pipeline"] == pipeline["id"]]
    return pipelines


async def _insert_stages(pipeline_id: int, stages: list[tuple[str, str]]) -> None:
    await Stage.insert(
        *[
            Stage(pipeline=pipeline_id, name=name, position=i, outcome=outcome)
            for i, (name, outcome) in enumerate(stages)
        ]
    )


async def create_pipeline(name: str) -> int:
    """A new pipeline with the minimal stages: New, Won and Lost (edit them later)."""
    cleaned = _name({"name": name})
    async with write():
        last = (
            await Pipeline.select(Pipeline.position)
            .order_by(Pipeline.position, ascending=False)
            .first()
        )
        rows = await Pipeline.insert(
            Pipeline(name=cleaned, position=(last["position"] + 1) if last else 0)
        ).returning(Pipeline.id)
        pipeline_id = int(rows[0]["id"])
        await _insert_stages(
            pipeline_id, [(_("New"), "open"), (_("Won"), "won"), (_("Lost"), "lost")]
        )
    return pipeline_id


async def rename_pipeline(pipeline_id: int, name: str) -> None:
    await get_pipeline(pipeline_id)
    cleaned = _name({"name": name})
    async with write():
        await Pipeline.update({Pipeline.name: cleaned}).where(Pipeline.id == pipeline_id)


rename = rename_pipeline


async def ensure_default_pipeline() -> int | None:
    """Create the "Sales" pipeline when there is none; its id, or None if nothing was done."""
    async with write():
        if await Pipeline.exists():
            return None
        rows = await Pipeline.insert(Pipeline(name=_("Sales"), position=0)).returning(Pipeline.id)
        pipeline_id = int(rows[0]["id"])
        await _insert_stages(
            pipeline_id,
            [
                (_("New"), "open"),
                (_("Qualified"), "open"),
                (_("Proposal"), "open"),
                (_("Negotiation"), "open"),
                (_("Won"), "won"),
                (_("Lost"), "lost"),
            ],
        )
    return pipeline_id


async def _get_stage(stage_id: int) -> dict[str, Any]:
    row = await Stage.select().where(Stage.id == stage_id).first()
    if row is None:
        raise NotFound(stage_id)
    return row


async def add_stage(pipeline_id: int, name: str, outcome: str = "open") -> int:
    """Append a stage; an open one goes before the terminal (won/lost) stages."""
    await get_pipeline(pipeline_id)
    form = Form({"name": name, "outcome": outcome})
    form.field("name", text(128, required=True))
    form.field("outcome", choice(OUTCOMES))
    form.raise_if_invalid()
    async with write():
        stages = await _stages(pipeline_id)
        order = [s["id"] for s in stages]
        insert_at = len(order)
        if form.cleaned["outcome"] == "open":
            insert_at = next(
                (i for i, s in enumerate(stages) if s["outcome"] != "open"), len(order)
            )
        rows = await Stage.insert(
            Stage(
                pipeline=pipeline_id,
                name=form.cleaned["name"],
                position=insert_at,
                outcome=form.cleaned["outcome"],
            )
        ).returning(Stage.id)
        stage_id = int(rows[0]["id"])
        order.insert(insert_at, stage_id)
        await _renumber(order)
    return stage_id


async def rename_stage(stage_id: int, name: str) -> None:
    await _get_stage(stage_id)
    cleaned = _name({"name": name})
    async with write():
        await Stage.update({Stage.name: cleaned}).where(Stage.id == stage_id)


async def _renumber(ordered_ids: list[int]) -> None:
    for position, stage_id in enumerate(ordered_ids):
        await Stage.update({Stage.position: position}).where(Stage.id == stage_id)


async def reorder_stages(pipeline_id: int, ordered_stage_ids: list[Any]) -> None:
    """Set the order of all stages of a pipeline (the list must name each exactly once)."""
    await get_pipeline(pipeline_id)
    try:
        wanted = [int(i) for i in ordered_stage_ids]
    except (TypeError, ValueError):
        raise ValidationError({"stages": _("Invalid stage order.")}) from None
    async with write():
        current = [s["id"] for s in await _stages(pipeline_id)]
        if sorted(wanted) != sorted(current):
            raise ValidationError(
                {"stages": _("The order must list every stage of the pipeline once.")}
            )
        await _renumber(wanted)


async def move_stage(stage_id: int, direction: int) -> None:
    """Swap a stage with its neighbour (-1 up, +1 down): the admin's up/down buttons."""
    stage = await _get_stage(stage_id)
    order = [s["id"] for s in await _stages(stage["pipeline"])]
    index = order.index(stage_id)
    other = index + (1 if direction > 0 else -1)
    if 0 <= other < len(order):
        order[index], order[other] = order[other], order[index]
        await reorder_stages(stage["pipeline"], order)


async def delete_stage(stage_id: int) -> None:
    """Only a stage no deal uses; never the last open, won or lost stage of a pipeline."""
    stage = await _get_stage(stage_id)
    async with write():
        used = await Deal.count().where(Deal.stage == stage_id)
        if used:
            raise ValidationError(
                {
                    "stage": _(
                        "Stage «%(name)s» still has %(n)s deal(s) (deleted ones included): move them to another stage first.",
                        name=stage["name"],
                        n=used,
                    )
                }
            )
        same = await Stage.count().where(
            (Stage.pipeline == stage["pipeline"]) & (Stage.outcome == stage["outcome"])
        )
        if same <= 1:
            messages = {
                "open": _("A pipeline needs at least one open stage."),
                "won": _("A pipeline needs at least one won stage."),
                "lost": _("A pipeline needs at least one lost stage."),
            }
            raise ValidationError({"stage": messages.get(stage["outcome"], messages["open"])})
        await Stage.delete().where(Stage.id == stage_id)
        await _renumber([s["id"] for s in await _stages(stage["pipeline"])])


# --- deals ------------------------------------------------------------------------------


def _currency(value: Any) -> str:
    code = str(value or "").strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", code):
        raise FieldError(_("A currency is three letters, like RUB or USD."))
    return code


async def _first_pipeline_id() -> int | None:
    row = (
        await Pipeline.select(Pipeline.id)
        .where(Pipeline.archived.eq(False))
        .order_by(Pipeline.position)
        .order_by(Pipeline.id)
        .first()
    )
    return row["id"] if row else None


async def validate_deal(
    data: dict[str, Any], actor_id: int | None, existing: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Cleaned column values of a deal form. On update, client, pipeline and stage stay."""
    settings = get_runtime().settings
    form = Form(data)
    form.field("title", text(255, required=True))
    amount = form.field("amount", money_minor)
    form.field("currency", _currency, default=settings.default_currency)
    form.field("expected_close", optional_date)
    responsible = form.field("responsible", integer(minimum=1), default=actor_id)
    if responsible and not await User.exists().where(
        (User.id == responsible) & (User.active.eq(True))
    ):
        form.error("responsible", _("Choose an active user."))
    values: dict[str, Any] = {}
    if existing is None:
        client_id = form.field("client", integer(minimum=1))
        if client_id and not await _client_visible(client_id):
            form.error("client", _("Choose an existing client."))
        pipeline_id = form.field("pipeline", integer(minimum=1, required=False))
        stage_id = form.field("stage", integer(minimum=1, required=False))
        if pipeline_id is None and "pipeline" not in form.errors:
            pipeline_id = await _first_pipeline_id()
            if pipeline_id is None:
                form.error("pipeline", _("Create a pipeline first."))
        elif pipeline_id and not await Pipeline.exists().where(Pipeline.id == pipeline_id):
            form.error("pipeline", _("Choose an existing pipeline."))
            pipeline_id = None
        if pipeline_id:
            stages = await _stages(pipeline_id)
            if stage_id:
                stage = await Stage.select(Stage.pipeline).where(Stage.id == stage_id).first()
                if stage is None:
                    form.error("stage", _("This stage does not exist."))
                elif stage["pipeline"] != pipeline_id:
                    form.error("stage", _("This stage belongs to another pipeline."))
            elif "stage" not in form.errors:
                first_open = next((s for s in stages if s["outcome"] == "open"), None)
                if first_open is None:
                    form.error("stage", _("The pipeline has no open stage."))
                else:
                    stage_id = first_open["id"]
        values.update(client=client_id, pipeline=pipeline_id, stage=stage_id)
    form.raise_if_invalid()
    values.update(
        title=form.cleaned["title"],
        amount_minor=amount,
        currency=form.cleaned["currency"],
        responsible=responsible,
        expected_close=form.cleaned["expected_close"],
    )
    return values


async def _client_visible(client_id: int) -> bool:
    row = (
        await Client.select(Client.responsible)
        .where((Client.id == client_id) & Client.deleted_at.is_null())
        .first()
    )
    return row is not None and access.current().sees_owner("client", row["responsible"])


async def create_deal(data: dict[str, Any], actor_id: int | None) -> int:
    values = await validate_deal(data, actor_id)
    if access.current().hides("deal.amount"):
        values["amount_minor"] = 0  # what a role may not see it may not set either
    now = utcnow()
    async with write():
        stage = await Stage.select(Stage.outcome).where(Stage.id == values["stage"]).first()
        closed_at = now if stage and stage["outcome"] != "open" else None
        rows = await Deal.insert(
            Deal(**values, closed_at=closed_at, created_at=now, updated_at=now)
        ).returning(Deal.id)
        deal_id = int(rows[0]["id"])
        await deal_totals.add([deal_totals.delta(values, +1)])
        await timeline.add_entry(
            values["client"],
            "deal.created",
            {
                "title": values["title"],
                "amount_minor": values["amount_minor"],
                "currency": values["currency"],
            },
            actor_id,
            deal_id=deal_id,
        )
        await audit.record("deal.create", "deal", deal_id, values["title"], audit.diff({}, values))
        events.emit(
            events.DealCreated(deal_id=deal_id, client_id=values["client"], actor_id=actor_id)
        )
    return deal_id


async def update_deal(deal_id: int, data: dict[str, Any], actor_id: int | None) -> None:
    """Edit title, amount, currency, responsible, expected close; stages move via move_deal."""
    before = await _visible_deal(deal_id)
    values = await validate_deal(data, actor_id, existing=before)
    if access.current().hides("deal.amount"):
        values["amount_minor"] = before["amount_minor"]  # never wiped by who cannot see it
    changes = audit.diff(before, values)
    changed = list(changes)
    if not changed:
        return
    async with write():
        counted = await Deal.select(*TOTAL_COLUMNS).where(Deal.id == deal_id).first()
        await Deal.update(
            {
                **{getattr(Deal, key): values[key] for key in changed},
                Deal.updated_at: utcnow(),
            }
        ).where(Deal.id == deal_id)
        if counted and set(changed) & {"responsible", "currency", "amount_minor"}:
            await deal_totals.add(
                [deal_totals.delta(counted, -1), deal_totals.delta({**counted, **values}, +1)]
            )
        await timeline.add_entry(
            before["client"],
            "deal.updated",
            {"title": values["title"], "fields": changed},
            actor_id,
            deal_id=deal_id,
        )
        await audit.record("deal.update", "deal", deal_id, values["title"], changes)


async def delete_deal(deal_id: int, actor_id: int | None) -> None:
    """Soft delete: the deal disappears from boards and lists, the data stays."""
    deal = await get_deal(deal_id)
    async with write():
        deleted = (
            await Deal.update({Deal.deleted_at: utcnow()})
            .where((Deal.id == deal_id) & Deal.deleted_at.is_null())
            .returning(*TOTAL_COLUMNS)
        )
        await deal_totals.add([deal_totals.delta(row, -1) for row in deleted])
        await timeline.add_entry(
            deal["client"], "deal.deleted", {"title": deal["title"]}, actor_id, deal_id=deal_id
        )
        await audit.record("deal.delete", "deal", deal_id, deal["title"])


TOTAL_COLUMNS = (Deal.stage, Deal.responsible, Deal.currency, Deal.amount_minor)
"""What a deal contributes to core_deal_total."""


def _deal_columns() -> list[Any]:
    return [
        *Deal.all_columns(),
        Deal.client.name.as_alias("client_name"),
        Deal.stage.name.as_alias("stage_name"),
        Deal.stage.outcome.as_alias("stage_outcome"),
        Deal.pipeline.name.as_alias("pipeline_name"),
        Deal.responsible.full_name.as_alias("responsible_name"),
    ]


def _visible() -> Any:
    return Deal.deleted_at.is_null() & Deal.client.deleted_at.is_null()


def _fix_times(row: dict[str, Any]) -> dict[str, Any]:
    for key in ("created_at", "updated_at", "closed_at", "deleted_at"):
        if key in row:
            row[key] = as_utc(row[key])
    return row


async def get_deal(deal_id: int) -> dict[str, Any]:
    """The deal as the current user may see it; NotFound if they may not (no id leaks)."""
    return access.current().redact(await _visible_deal(deal_id), HIDEABLE)


async def _visible_deal(deal_id: int) -> dict[str, Any]:
    row = await Deal.select(*_deal_columns()).where((Deal.id == deal_id) & _visible()).first()
    if row is None or not access.current().sees_owner("deal", row["responsible"]):
        raise NotFound(deal_id)
    return _fix_times(row)


def _scoped(condition: Any) -> Any:
    visible = access.current().owner_filter("deal", Deal.responsible)
    return condition if visible is None else condition & visible


def _redacted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    me = access.current()
    return [me.redact(_fix_times(row), HIDEABLE) for row in rows]


async def for_client(client_id: int) -> list[dict[str, Any]]:
    """The client's deals for its card: open ones first, newest first within each group.

    Raw SQL: every card view runs it (Piccolo's query building cost more than the query).
    """
    visible, owner_ids = access.current().owner_sql("deal", "d.responsible")
    rows = await fetch(
        "SELECT d.id, d.title, d.amount_minor, d.currency, d.stage, d.closed_at, "
        "s.name AS stage_name, s.outcome AS stage_outcome "
        "FROM core_deal d LEFT JOIN core_stage s ON s.id = d.stage "
        "WHERE d.client = {} AND d.deleted_at IS NULL"
        + (f" AND {visible}" if visible else "")
        + " ORDER BY d.id DESC",
        client_id,
        *owner_ids,
    )
    rows.sort(key=lambda r: r["stage_outcome"] != "open")
    return _redacted(rows)


# --- moving between stages ------------------------------------------------------------


async def move_deal(
    deal_id: int,
    stage_id: Any,
    actor_id: int | None,
    lost_reason: str = "",
    deal: dict[str, Any] | None = None,
) -> bool:
    """Move a deal to another stage of its pipeline; False if it was already there.

    ``deal``: the deal as `get_deal` returned it, when the caller already has it.
    """
    deal = deal or await get_deal(deal_id)
    try:
        target_id = integer(minimum=1)(stage_id)
    except FieldError:
        target_id = None  # empty or not a number
    if target_id is None:
        raise ValidationError({"stage": _("Choose a stage.")})
    # The pipeline's stages in one query: the target and, below, the stage left behind.
    stages = {
        stage["id"]: stage
        for stage in await Stage.select(Stage.id, Stage.name, Stage.outcome).where(
            Stage.pipeline == deal["pipeline"]
        )
    }
    target = stages.get(target_id)
    if target is None:
        if await Stage.exists().where(Stage.id == target_id):
            raise ValidationError({"stage": _("This stage belongs to another pipeline.")})
        raise ValidationError({"stage": _("This stage does not exist.")})
    reason = ""
    if target["outcome"] == "lost":
        try:
            reason = text(500)(lost_reason)
        except FieldError as exc:
            raise ValidationError({"lost_reason": exc.message}) from None
        if not reason:
            raise ValidationError({"lost_reason": _("Say why the deal was lost.")})
    async with write():
        current = (
            await Deal.select(*TOTAL_COLUMNS, Deal.title, Deal.client)
            .where(Deal.id == deal_id)
            .first()
        )
        if current is None:
            raise NotFound(deal_id)
        from_id = current["stage"]
        if from_id == target_id:
            return False
        source = stages.get(from_id)
        now = utcnow()
        updated = (
            await Deal.update(
                {
                    Deal.stage: target_id,
                    Deal.closed_at: now if target["outcome"] != "open" else None,
                    Deal.lost_reason: reason,
                    Deal.updated_at: now,
                }
            )
            .where((Deal.id == deal_id) & (Deal.stage == from_id))
            .returning(Deal.id)
        )
        if not updated:
            raise ValidationError({"stage": _("The deal was changed meanwhile; try again.")})
        await deal_totals.add(
            [deal_totals.delta(current, -1), deal_totals.delta({**current, "stage": target_id}, +1)]
        )
        client_id = current["client"]
        await timeline.add_entry(
            client_id,
            "deal.stage_changed",
            {
                "title": current["title"],
                "from_stage": source["name"] if source else "",
                "to_stage": target["name"],
                "outcome": target["outcome"],
                "lost_reason": reason,
            },
            actor_id,
            deal_id=deal_id,
        )
        await audit.record(
            "deal.update",
            "deal",
            deal_id,
            current["title"],
            {"stage": [source["name"] if source else None, target["name"]]},
        )
        events.emit(
            events.DealStageChanged(
                deal_id=deal_id,
                client_id=client_id,
                from_stage_id=from_id,
                to_stage_id=target_id,
                actor_id=actor_id,
            )
        )
        if target["outcome"] == "won":
            events.emit(events.DealWon(deal_id=deal_id, client_id=client_id, actor_id=actor_id))
        elif target["outcome"] == "lost":
            events.emit(
                events.DealLost(
                    deal_id=deal_id, client_id=client_id, reason=reason, actor_id=actor_id
                )
            )
    return True


def next_stage_id(stages: list[dict[str, Any]], stage_id: int) -> int | None:
    """Where the "→" button takes a deal: the next open stage, after the last one the
    first won stage; nothing from a terminal stage (losing needs a reason)."""
    current = next((s for s in stages if s["id"] == stage_id), None)
    if current is None or current["outcome"] != "open":
        return None
    later = stages[stages.index(current) + 1 :]
    following = next((s for s in later if s["outcome"] == "open"), None)
    if following is None:
        following = next((s for s in stages if s["outcome"] == "won"), None)
    return following["id"] if following else None


# --- board and list ---------------------------------------------------------------------


async def board(
    pipeline_id: int,
    responsible: int | None = None,
    known: list[dict[str, Any]] | None = None,
    only_stages: Collection[int] | None = None,
) -> dict[str, Any]:
    """The kanban of one pipeline: each stage with up to BOARD_CAP deals, the count of the
    rest and the sum of amounts per currency. ``known``: pipelines the caller already
    loaded with `list_pipelines` (the board page shows them as tabs). ``only_stages``:
    just those columns (a move answers with the two it changed)."""
    pipeline = next((p for p in known or () if p["id"] == pipeline_id), None)
    if pipeline is None:
        pipeline = await get_pipeline(pipeline_id)
    shown = [s for s in pipeline["stages"] if only_stages is None or s["id"] in only_stages]
    sums: dict[int, dict[str, int]] = {}
    counts: dict[int, int] = {}
    stage_ids = ", ".join(str(int(stage["id"])) for stage in shown) or "0"
    sql = (
        "SELECT t.stage AS stage, t.currency AS currency, SUM(t.deals) AS n, "
        f"SUM(t.amount_minor) AS total FROM core_deal_total t WHERE t.stage IN ({stage_ids})"
    )
    args: list[Any] = []
    if responsible:
        sql += " AND t.responsible = {}"
        args.append(responsible)
    visible_totals, owner_ids = access.current().owner_sql("deal", "t.responsible")
    if visible_totals:
        sql += f" AND {visible_totals}"
        args += owner_ids
    amounts_hidden = access.current().hides("deal.amount")
    for row in await fetch(sql + " GROUP BY t.stage, t.currency", *args):
        if not int(row["n"]):
            continue  # every deal of that currency left the stage
        counts[row["stage"]] = counts.get(row["stage"], 0) + int(row["n"])
        sums.setdefault(row["stage"], {})[row["currency"]] = int(row["total"] or 0)

    # One raw query per column (index core_deal_stage_recent, or core_deal_resp_stage_recent
    # for a manager): Piccolo's query building cost more than the queries. Client and
    # manager names by subquery, read for the 20 rows shown only.
    visible, owner_ids = access.current().owner_sql("deal", "d.responsible")
    column_sql = (
        "SELECT d.id, d.title, d.client, d.amount_minor, d.currency, d.expected_close, "
        "c.name AS client_name, "
        "(SELECT u.full_name FROM core_user u WHERE u.id = d.responsible) AS responsible_name "
        "FROM core_deal d JOIN core_client c ON c.id = d.client "
        "WHERE d.stage = {} AND d.pipeline = {} AND d.deleted_at IS NULL "
        "AND c.deleted_at IS NULL"
        + (" AND d.responsible = {}" if responsible else "")
        + (f" AND {visible}" if visible else "")
        + " ORDER BY d.updated_at DESC, d.id DESC LIMIT {}"
    )
    filters = [*([responsible] if responsible else []), *owner_ids]
    found = await asyncio.gather(
        *(fetch(column_sql, stage["id"], pipeline_id, *filters, BOARD_CAP) for stage in shown)
    )
    columns = []
    for stage, deals in zip(shown, found, strict=True):
        count = counts.get(stage["id"], 0)
        columns.append(
            {
                **stage,
                "deals": _redacted(deals),
                "count": count,
                "more": max(count - len(deals), 0),
                "totals": [] if amounts_hidden else sorted(sums.get(stage["id"], {}).items()),
                "next_stage_id": next_stage_id(pipeline["stages"], stage["id"]),
            }
        )
    return {"pipeline": pipeline, "stages": columns}


@dataclass
class DealQuery:
    pipeline: int | None = None
    stage: int | None = None
    responsible: int | None = None
    client: int | None = None
    status: str = ""
    search: str = ""
    cursor: str = ""
    size: int = PAGE_SIZE


async def list_deals(query: DealQuery) -> tuple[list[dict[str, Any]], str | None]:
    """One keyset page, newest first (id desc), and the cursor of the next page."""
    select = Deal.select(
        Deal.id,
        Deal.title,
        Deal.client,
        Deal.amount_minor,
        Deal.currency,
        Deal.expected_close,
        Deal.closed_at,
        Deal.created_at,
        Deal.client.name.as_alias("client_name"),
        Deal.stage.name.as_alias("stage_name"),
        Deal.stage.outcome.as_alias("stage_outcome"),
        Deal.pipeline.name.as_alias("pipeline_name"),
        Deal.responsible.full_name.as_alias("responsible_name"),
    ).where(_scoped(_visible()))
    if query.pipeline:
        select = select.where(Deal.pipeline == query.pipeline)
    if query.stage:
        select = select.where(Deal.stage == query.stage)
    if query.responsible:
        select = select.where(Deal.responsible == query.responsible)
    if query.client:
        select = select.where(Deal.client == query.client)
    if query.status in STATUSES:
        select = select.where(Deal.stage.outcome == query.status)
    search = query.search.strip()[:200]
    if search:
        escaped = search.replace("%", "").strip()
        if escaped:
            pattern = f"%{escaped}%"
            # SQLite's LIKE is already case-insensitive (ASCII); PostgreSQL needs ILIKE.
            title = Deal.title
            select = select.where(
                title.like(pattern) if get_runtime().settings.is_sqlite else title.ilike(pattern)
            )
    if query.cursor.isdigit():
        select = select.where(Deal.id < int(query.cursor))
    rows = await select.order_by(Deal.id, ascending=False).limit(query.size + 1)
    page_rows = _redacted(rows[: query.size])
    next_cursor = str(page_rows[-1]["id"]) if len(rows) > query.size else None
    return page_rows, next_cursor
