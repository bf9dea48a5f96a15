"""Record-level visibility at scale: the client list and search of a manager (scope
"own"), a team head ("team") and the administrator ("all"), timed against `kartoteka run`.

The app runs in its production configuration: PostgreSQL with a connection pool,
Redis as the job broker, two web workers, no debug, no plugins (or embedded SQLite
when the database URL says so). Every request is timed on the client, one after the
other, over loopback with keep-alive (as a browser does): the figures are server time
plus the client's own HTTP overhead, an upper bound of what the server spends.
Afterwards the queries the list service sends for the same requests (captured from
the service, not re-typed) run under EXPLAIN to show which index serves each one.

    python -m bench.scoped_lists                       # 1,000,000 clients on PostgreSQL
    python -m bench.scoped_lists --engine sqlite --preset 100k   # embedded mode

See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from bench import presets
from bench.dataset import Dataset, DatasetError, ensure_dataset
from bench.plans import Plan, explain_call
from bench.server import (
    ROOT,
    Server,
    ServerError,
    ensure_database,
    free_port,
    migrate,
    production_env,
)

DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/13"
HTMX_ROWS = {"hx-request": "true", "hx-target": "client-rows"}
HTMX_MORE = {"hx-request": "true", "hx-target": "client-more"}
DEEP_PAGES = 20
TARGETS_MS = {"list": 25.0, "card": 25.0, "name": 25.0, "exact": 10.0}
"""p95 targets of issue 7 per scenario group (2 cores, PostgreSQL, 1M clients)."""
WORKER_RSS_TARGET_MB = 150
_ROW_LINK = re.compile(r'<a href="/clients/(\d+)">')
_CURSOR = re.compile(r"cursor=([A-Za-z0-9_=-]+)")


class BenchError(RuntimeError):
    pass


@dataclass
class Scenario:
    name: str
    group: str
    urls: list[str]
    """Requests cycle through these (search-as-you-type sends one per keystroke)."""
    headers: dict[str, str] = field(default_factory=dict)
    must_show: int | None = None
    """A client id the answer must list: the search found its client."""


@dataclass
class Result:
    scenario: str
    role: str
    group: str
    requests: int
    p50: float
    p95: float
    p99: float
    per_second: float

    @property
    def target(self) -> float:
        return TARGETS_MS[self.group]


@dataclass
class LastPage:
    """Where the user's list ends: the "Show more" cursor that opens its last page."""

    sort: str
    number: int
    cursor: str


def revision() -> str:
    """The commit measured, "+changes" when the tree differs from it."""
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+changes" if git("status", "--porcelain", "--", "core") else "")


def roles(dataset: Dataset) -> list[tuple[str, str]]:
    return [("manager", dataset.manager), ("head", dataset.head), ("admin", dataset.admin)]


def first_word(name: str) -> str:
    """What a user starts typing: 'ООО «Ромашка-12»' -> 'ромашка'."""
    from core.services.clients import search_key

    return re.split(r"[\s-]", search_key(name))[0]


def search_url(q: str) -> str:
    return str(httpx.URL("/clients", params={"q": q}))


def other_format(phone: str) -> str:
    """'+79160000007' as people write it: '8 (916) 000-00-07'."""
    from core.validation import format_phone

    return format_phone(phone, "RU")


# --- the service side, in-process (same settings as the server) --------------------------


def open_app() -> None:
    from core.db import bind_tables
    from core.runtime import build_runtime, set_runtime

    set_runtime(build_runtime())
    bind_tables()


async def access_of(username: str) -> Any:
    from core import access
    from core.tables import User

    user = await User.select().where(User.username == username).first()
    return await access.for_user(user)


async def last_page(username: str, sort: str) -> LastPage:
    """Read from the table directly: walking a million clients page by page would take hours."""
    from core.services.clients import PAGE_SIZE, _encode_cursor, _sort_column
    from core.services.common import as_utc
    from core.tables import Client

    visible = (await access_of(username)).owner_filter("client", Client.responsible)
    condition = (
        Client.deleted_at.is_null() if visible is None else Client.deleted_at.is_null() & visible
    )
    total = await Client.count().where(condition)
    pages = max(1, math.ceil(total / PAGE_SIZE))
    column = _sort_column(sort)
    # The list runs ascending by name, descending by activity; read it from its end.
    row = (
        await Client.select(column, Client.id)
        .where(condition)
        .order_by(column, Client.id, ascending=sort != "name")
        .offset(total - PAGE_SIZE * (pages - 1))
        .first()
    )
    if row is None:
        return LastPage(sort, 1, "")
    value = row[column._meta.name]
    value = as_utc(value).isoformat() if sort != "name" else value
    return LastPage(sort, pages, _encode_cursor([value, row["id"]]))


async def query_plans(
    dataset: Dataset, database_url: str, last_pages: dict[str, list[LastPage]]
) -> list[Plan]:
    """EXPLAIN what list_clients sends for each scenario, as each user."""
    from core import access
    from core.services import clients
    from core.services.clients import ClientQuery

    target, word = dataset.target, first_word(dataset.target.name)
    plans: list[Plan] = []
    for role, username in roles(dataset):
        with access.acting_as(await access_of(username)):
            deep = ClientQuery(sort="name")
            for _ in range(DEEP_PAGES):
                _, cursor = await clients.list_clients(deep)
                if not cursor:
                    break
                deep = ClientQuery(sort="name", cursor=cursor)
            cases = {
                "list, sort name": ClientQuery(sort="name"),
                "list, sort activity": ClientQuery(sort="activity"),
                f"page {DEEP_PAGES + 1}, sort name": deep,
                **{
                    f"last page {page.number}, sort {page.sort}": ClientQuery(
                        sort=page.sort, cursor=page.cursor
                    )
                    for page in last_pages[role]
                },
                f"name prefix '{word[:1]}'": ClientQuery(search=word[:1]),
                f"name prefix '{word[:4]}'": ClientQuery(search=word[:4]),
                "phone, other format": ClientQuery(search=other_format(target.phone)),
                "e-mail": ClientQuery(search=target.email),
                "INN": ClientQuery(search=target.inn),
            }
            for label, query in cases.items():
                plans += await explain_call(
                    role, label, partial(clients.list_clients, query), database_url
                )
            if role == "manager":
                plans += await explain_call(
                    role, "list page: tag choices", clients.tag_names, database_url
                )
                plans += await explain_call(
                    role, "list page: source choices", clients.source_names, database_url
                )
    return plans


# --- the HTTP side --------------------------------------------------------------------------


def login(base_url: str, username: str, password: str) -> httpx.Client:
    http = httpx.Client(base_url=base_url, timeout=120)
    http.get("/login")
    response = http.post(
        "/login",
        data={
            "username": username,
            "password": password,
            "_csrf_token": http.cookies.get("csrftoken", ""),
        },
    )
    if response.status_code != 303:
        http.close()
        raise BenchError(f"login as {username} failed: {response.status_code}")
    return http


def shown_ids(html: str) -> set[int]:
    return {int(match) for match in _ROW_LINK.findall(html)}


def deep_url(http: httpx.Client, sort: str) -> tuple[str, int]:
    """The "Show more" request of page DEEP_PAGES + 1 (or of the last page), and its number."""
    url, page = f"/clients?sort={sort}", 1
    for _ in range(DEEP_PAGES):
        response = http.get(url, headers=HTMX_MORE)
        if response.status_code != 200:
            raise BenchError(f"{url} answered {response.status_code}")
        match = _CURSOR.search(response.text)
        if not match:
            break
        url, page = f"/clients?q=&sort={sort}&cursor={match.group(1)}", page + 1
    return url, page


def scenarios(http: httpx.Client, dataset: Dataset, last_pages: list[LastPage]) -> list[Scenario]:
    target, word = dataset.target, first_word(dataset.target.name)
    deep_name, name_page = deep_url(http, "name")
    deep_activity, activity_page = deep_url(http, "activity")
    return [
        Scenario("list, sort name", "list", ["/clients?sort=name"]),
        Scenario("list, sort activity", "list", ["/clients?sort=activity"]),
        Scenario(f"page {name_page}, sort name", "list", [deep_name], HTMX_MORE),
        Scenario(f"page {activity_page}, sort activity", "list", [deep_activity], HTMX_MORE),
        *[
            Scenario(
                f"last page {page.number}, sort {page.sort}",
                "list",
                [f"/clients?q=&sort={page.sort}&cursor={page.cursor}"],
                HTMX_MORE,
            )
            for page in last_pages
        ],
        Scenario(
            f"name prefix, typing '{word}'",
            "name",
            [search_url(word[:n]) for n in range(1, len(word) + 1)],  # one per keystroke
            HTMX_ROWS,
        ),
        Scenario(
            "phone, other format",
            "exact",
            [search_url(other_format(target.phone))],
            HTMX_ROWS,
            target.id,
        ),
        Scenario("e-mail", "exact", [search_url(target.email)], HTMX_ROWS, target.id),
        Scenario("INN", "exact", [search_url(target.inn)], HTMX_ROWS, target.id),
        Scenario("client card", "card", [f"/clients/{target.id}"]),
    ]


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def measure(
    http: httpx.Client,
    role: str,
    scenario: Scenario,
    requests: int,
    warmup: int,
    seconds: float,
) -> Result:
    """`requests` timed requests after `warmup` untimed ones; a scenario slower than
    `seconds` in all stops early (at least 5 requests) so a slow query cannot stall the run."""

    def cycle() -> Iterator[str]:
        while True:
            yield from scenario.urls

    urls = cycle()
    started = time.perf_counter()
    for _ in range(warmup):
        http.get(next(urls), headers=scenario.headers)
        if time.perf_counter() - started > seconds / 4:
            break
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < requests:
        url = next(urls)
        t0 = time.perf_counter()
        response = http.get(url, headers=scenario.headers)
        samples.append((time.perf_counter() - t0) * 1000)
        if response.status_code != 200:
            raise BenchError(f"{role}: {scenario.name}: {url} answered {response.status_code}")
        if len(samples) >= 5 and time.perf_counter() - started > seconds:
            break
    elapsed = time.perf_counter() - started
    if scenario.must_show is not None:
        answer = http.get(scenario.urls[-1], headers=scenario.headers).text
        if scenario.must_show not in shown_ids(answer):
            raise BenchError(f"{role}: {scenario.name}: client {scenario.must_show} not found")
    return Result(
        scenario=scenario.name,
        role=role,
        group=scenario.group,
        requests=len(samples),
        p50=percentile(samples, 0.50),
        p95=percentile(samples, 0.95),
        p99=percentile(samples, 0.99),
        per_second=len(samples) / elapsed,
    )


def check_scope(http: httpx.Client, role: str, dataset: Dataset) -> str:
    """The other team's client: hidden from the manager and the head (404 on its card, not
    found by its phone), visible to the admin. Without this the timings would mean nothing."""
    foreign = dataset.foreign
    card = http.get(f"/clients/{foreign.id}").status_code
    found = foreign.id in shown_ids(http.get(search_url(foreign.phone), headers=HTMX_ROWS).text)
    sees = role == "admin"
    if (card == 200) != sees or found != sees:
        raise BenchError(f"{role}: scope broken (card {card}, found by phone: {found})")
    return f"{role}: other team's client " + ("visible" if sees else "hidden (card 404, no hit)")


# --- report ---------------------------------------------------------------------------------


def print_results(
    results: list[Result], rss: list[float], database_url: str, load: list[float]
) -> None:
    engine = "SQLite, embedded" if database_url.startswith("sqlite") else "PostgreSQL, server mode"
    print(f"\n{engine}: ms per request, timed on the client over loopback, one at a time")
    print(f"load average before/after: {load[0]:.2f} / {load[1]:.2f} on {os.cpu_count()} CPUs")
    print(f"code: {revision()}")
    header = (
        f"{'scenario':<34} {'role':<8} {'n':>4} {'p50':>7} {'p95':>7} {'p99':>7} "
        f"{'req/s':>6}  p95 target"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        verdict = "ok" if r.p95 <= r.target else "MISSED"
        print(
            f"{r.scenario:<34} {r.role:<8} {r.requests:>4} {r.p50:7.1f} {r.p95:7.1f} "
            f"{r.p99:7.1f} {r.per_second:6.0f}  <= {r.target:.0f} {verdict}"
        )
    sizes = ", ".join(f"{size:.0f}" for size in rss)
    print(f"\nserver RSS: {sum(rss):.0f} MB in {len(rss)} processes ({sizes} MB)")
    if rss and max(rss) > WORKER_RSS_TARGET_MB:
        print(f"  a process is above the {WORKER_RSS_TARGET_MB} MB target")


def print_plans(plans: list[Plan]) -> None:
    print("\nQueries list_clients sends, under EXPLAIN (ms; plan steps, outermost first)")
    for plan in plans:
        print(f"{plan.role:<8} {plan.query:<38} {plan.ms:8.2f}  {plan.steps}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    presets.add_arguments(parser)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per scenario")
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests before those")
    parser.add_argument(
        "--seconds", type=float, default=30, help="time limit of one scenario's timed requests"
    )
    parser.add_argument("--broker-url", default=DEFAULT_BROKER_URL, help="server mode only")
    parser.add_argument("--keep-server", action="store_true", help="leave the server running")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    target = presets.resolve(args)
    database_url, args.clients = target.database_url, target.clients

    data_dir = Path(tempfile.mkdtemp(prefix="kartoteka-bench-"))
    env = production_env(database_url, args.broker_url, data_dir, free_port())
    for name in [k for k in os.environ if k.startswith("KARTOTEKA_")]:
        del os.environ[name]
    os.environ.update(env)  # the in-process part reads the settings the server reads
    if not database_url.startswith("sqlite"):
        asyncio.run(ensure_database(database_url))
    migrate(env)
    dataset = asyncio.run(ensure_dataset(database_url, args.clients))

    async def prepare() -> dict[str, list[LastPage]]:
        open_app()
        return {
            role: [await last_page(username, sort) for sort in ("name", "activity")]
            for role, username in roles(dataset)
        }

    last_pages = asyncio.run(prepare())
    load = [os.getloadavg()[0]]  # the machine may be shared: say how busy it was
    server = Server(env, data_dir / "server.log")
    results: list[Result] = []
    checks: list[str] = []
    try:
        server.wait_until_ready()
        for role, username in roles(dataset):
            http = login(server.base_url, username, dataset.password)
            try:
                checks.append(check_scope(http, role, dataset))
                for scenario in scenarios(http, dataset, last_pages[role]):
                    result = measure(http, role, scenario, args.requests, args.warmup, args.seconds)
                    results.append(result)
                    print(f"  {role}: {scenario.name}: p95 {result.p95:.1f} ms", flush=True)
            finally:
                http.close()
        rss = server.rss_mb()
        load.append(os.getloadavg()[0])
    finally:
        if args.keep_server:
            print(
                f"server left running at {server.base_url}: stop it with kill -- -{server.process.pid}"
            )
            print(f"users: {', '.join(u for _, u in roles(dataset))}, password {dataset.password}")
        else:
            server.stop()
            shutil.rmtree(data_dir, ignore_errors=True)

    print_results(results, rss, database_url, load)
    print("\n" + "\n".join(checks))
    plans = asyncio.run(query_plans(dataset, database_url, last_pages))
    print_plans(plans)
    if args.json:
        report = {
            "database": "sqlite" if database_url.startswith("sqlite") else "postgresql",
            "clients": dataset.clients,
            "load_seconds": dataset.load_seconds,
            "results": [asdict(r) for r in results],
            "rss_mb": rss,
            "load_average": load,
            "revision": revision(),
            "cpus": os.cpu_count(),
            "scope_checks": checks,
            "plans": [asdict(p) for p in plans],
        }
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BenchError, DatasetError, ServerError) as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        sys.exit(1)
