"""The filters of the client and deal lists, read in one place for the page, the API
and the export, so "export what I see" cannot drift from what the list shows."""

from __future__ import annotations

from litestar.di import Provide
from litestar.params import FromQuery

from core.services import deals
from core.services.clients import ClientQuery
from core.services.deals import DealQuery

SEARCH_LIMIT = 200


def client_query(
    q: FromQuery[str] = "",
    responsible: FromQuery[int | None] = None,
    tag: FromQuery[str] = "",
    source: FromQuery[str] = "",
    sort: FromQuery[str] = "name",
    cursor: FromQuery[str] = "",
) -> ClientQuery:
    return ClientQuery(
        search=q[:SEARCH_LIMIT],
        responsible=responsible,
        tag=tag,
        source=source,
        sort=sort,
        cursor=cursor,
    )


def deal_query(
    q: FromQuery[str] = "",
    pipeline: FromQuery[int | None] = None,
    stage: FromQuery[int | None] = None,
    responsible: FromQuery[int | None] = None,
    client: FromQuery[int | None] = None,
    status: FromQuery[str] = "",
    cursor: FromQuery[str] = "",
) -> DealQuery:
    return DealQuery(
        pipeline=pipeline,
        stage=stage,
        responsible=responsible,
        client=client,
        status=status if status in deals.STATUSES else "",
        search=q[:SEARCH_LIMIT],
        cursor=cursor,
    )


CLIENT_QUERY = {"filters": Provide(client_query, sync_to_thread=False)}
DEAL_QUERY = {"filters": Provide(deal_query, sync_to_thread=False)}
