"""The benchmark's dataset: N clients spread evenly over 50 managers in 5 teams, with
2N contacts, N deals in 3 pipelines, 3N tasks and 5N timeline entries (bench/records.py).

Rows are generated in Python in batches (names go through the real `search_key`,
so name search sees exactly what production stores) and loaded with COPY on
PostgreSQL or ``executemany`` on SQLite. The bulk-loaded tables' secondary indexes
are dropped for the load and rebuilt after it in one sorted pass each, which is
what makes a million clients load in about a minute.

The load is one transaction: an interrupted run leaves no half dataset. A dataset
of the requested size is reused, so re-running the benchmark is quick.

    python -m bench.dataset --clients 100000 --database-url sqlite:///tmp/bench.sqlite3
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from bench import records
from core.services import deal_totals
from core.services.clients import search_key
from core.services.users import hash_password
from core.validation import _INN10, _INN12_A, _INN12_B, _check_digit

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/kartoteka_bench"
PASSWORD = "bench-password"
"""Every bench user's password (one argon2 hash, computed once)."""
TEAMS = 5
MANAGERS_PER_TEAM = 10
BATCH = 50_000
SEED = 20261122
BULK_TABLES = (
    "core_client",
    "core_contact",
    "core_contact_point",
    "core_client_tag",
    "core_deal",
    "core_task",
    "core_timeline",
)
"""Loaded with COPY; their secondary indexes and foreign keys are rebuilt after the load."""
MANAGERS = TEAMS * MANAGERS_PER_TEAM
_BENCH_USERS = "username LIKE 'bench!_%' ESCAPE '!'"
_BENCH_TEAMS = "name LIKE 'Bench team %'"


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


RU_COMPANY_WORDS = _words(
    "Ромашка Вектор Альфа Гранит Север Восток Меридиан Берёзка Сфера Горизонт "
    "Прогресс Стройинвест Техносервис Агрокомплекс Транслогистик Энергия Магистраль "
    "Ладога Сибирь Урал Волга Фортуна Орион Атлант Спектр Пульсар Квант Феникс Олимп "
    "Триумф Авангард Стандарт Мегаполис Лидер Альянс Успех Кедр Рассвет Надежда "
    "Ёлочка"
)
RU_FORMS = ("ООО", "ООО", "ООО", "АО", "ПАО", "ЗАО")
INTL_COMPANY_WORDS = _words(
    "Acme Globex Initech Umbrella Hooli Vandelay Nakatomi Cyberdyne Tyrell Soylent "
    "Aperture Wonka Oceanic Monarch Stark Wayne Dunder Sterling Prestige Virtucon "
    "Oscorp Rekall Weyland Ollivander Northwind Contoso Fabrikam Tailspin Wingtip "
    "Litware"
)
INTL_FORMS = ("Ltd", "LLC", "GmbH", "Inc.", "S.A.", "B.V.", "Trading", "Group")
RU_SURNAMES = _words(
    "Иванов Смирнов Кузнецов Попов Васильев Петров Соколов Михайлов Новиков Фёдоров "
    "Морозов Волков Алексеев Лебедев Семёнов Егоров Павлов Козлов Степанов Николаев "
    "Орлов Андреев Макаров Никитин Захаров Зайцев Соловьёв Борисов Яковлев Григорьев"
)
RU_MALE = _words(
    "Александр Алексей Андрей Дмитрий Евгений Иван Максим Михаил Николай Павел Пётр "
    "Сергей Юрий Артём Владимир"
)
RU_FEMALE = _words(
    "Анна Елена Ольга Наталья Татьяна Ирина Мария Светлана Екатерина Юлия Алёна Дарья "
    "Ксения Марина Людмила"
)
RU_FATHERS = _words(
    "Александров Алексеев Андреев Дмитриев Иванов Михайлов Николаев Петров Сергеев "
    "Юрьев Владимиров Павлов"
)
INTL_FIRST = _words(
    "John Mary James Linda Robert Patricia Michael Jennifer David Elizabeth William "
    "Barbara Richard Susan Thomas Jessica Hans Anna Pierre Sophie Marco Giulia Carlos "
    "Lucia"
)
INTL_LAST = _words(
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Martinez Wilson Anderson "
    "Taylor Moore Martin Müller Schmidt Dubois Rossi Fernández Kowalski Novak Jensen "
    "Hansen"
)
CITIES = ("Москва", "Санкт-Петербург", "Казань", "Екатеринбург", "Новосибирск", "Самара")
STREETS = ("Ленина", "Мира", "Советская", "Гагарина", "Садовая", "Лесная", "Пушкина")
SOURCES = ("", "", "website", "referral", "cold call", "exhibition", "advertising")
TAGS = ("vip", "опт", "розница", "партнёр", "new", "регион", "key account", "тендер")
MAIL_LOCALS = ("info", "sales", "office", "hello", "mail", "zakaz")
MAIL_DOMAINS = ("mail.ru", "yandex.ru", "gmail.com", "bk.ru", "inbox.ru", "outlook.com")

CLIENT_COLUMNS = (
    "id",
    "kind",
    "name",
    "name_search",
    "legal_name",
    "inn",
    "kpp",
    "address",
    "source",
    "notes",
    "responsible",
    "created_at",
    "updated_at",
    "last_activity_at",
    "deleted_at",
)
POINT_COLUMNS = ("client", "kind", "value", "position")
TAG_COLUMNS = ("client", "tag")


@dataclass(frozen=True)
class Target:
    """A live client of the measured manager, with everything search can find it by."""

    id: int
    name: str
    phone: str
    email: str
    inn: str


@dataclass(frozen=True)
class Dataset:
    clients: int
    manager: str
    head: str
    admin: str
    password: str
    target: Target
    """A client of the manager (team 1): every search looks for it."""
    foreign: Target
    """A client in team 5: the manager and the head must not see it, the admin must."""
    cards: dict[str, int]
    """username -> a live client of that user's with exactly HEAVY_ENTRIES timeline entries."""
    load_seconds: float | None
    """None when an existing dataset was reused."""


class DatasetError(RuntimeError):
    pass


# --- one small interface over asyncpg and sqlite3 ----------------------------------------


class Db:
    """asyncpg on PostgreSQL, sqlite3 on SQLite; SQL is written with $1-style parameters."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._pg: Any = None
        self._lite: sqlite3.Connection | None = None

    async def __aenter__(self) -> Db:
        if self.is_sqlite:
            self._lite = sqlite3.connect(self.url.split("///", 1)[1], isolation_level=None)
            self._lite.execute("PRAGMA foreign_keys = ON")
        else:
            import asyncpg

            self._pg = await asyncpg.connect(self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._lite is not None:
            self._lite.close()
        if self._pg is not None:
            await self._pg.close()

    @staticmethod
    def _qmarks(sql: str) -> str:
        return re.sub(r"\$(\d+)", r"?\1", sql)  # ?NNN: numbered, may repeat

    async def execute(self, sql: str, *args: Any) -> None:
        if self._lite is not None:
            self._lite.execute(self._qmarks(sql), args)
        else:
            await self._pg.execute(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if self._lite is not None:
            return list(self._lite.execute(self._qmarks(sql), args).fetchall())
        return [tuple(row) for row in await self._pg.fetch(sql, *args)]

    async def value(self, sql: str, *args: Any) -> Any:
        rows = await self.fetch(sql, *args)
        return rows[0][0] if rows else None

    async def copy(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        if self._lite is not None:
            marks = ", ".join("?" for _ in columns)
            self._lite.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows
            )
        else:
            await self._pg.copy_records_to_table(table, columns=list(columns), records=rows)

    def timestamp(self, epoch: int) -> Any:
        """A timestamptz as each engine stores it (Piccolo keeps SQLite's as UTC text)."""
        moment = datetime.fromtimestamp(epoch, UTC)
        return str(moment.replace(tzinfo=None)) if self.is_sqlite else moment

    def day(self, value: date) -> Any:
        return value.isoformat() if self.is_sqlite else value


# --- the data ------------------------------------------------------------------------------


def _name(rng: random.Random, n: int) -> tuple[str, str]:
    """A client's kind and name: Russian and international companies and people."""
    roll = rng.random()
    if roll < 0.4:
        return "company", f"{rng.choice(RU_FORMS)} «{rng.choice(RU_COMPANY_WORDS)}-{n}»"
    if roll < 0.6:
        return "company", f"{rng.choice(INTL_COMPANY_WORDS)} {n} {rng.choice(INTL_FORMS)}"
    if roll < 0.9:
        surname = rng.choice(RU_SURNAMES)
        if rng.random() < 0.5:
            return "person", f"{surname} {rng.choice(RU_MALE)} {rng.choice(RU_FATHERS)}ич"
        return "person", f"{surname}а {rng.choice(RU_FEMALE)} {rng.choice(RU_FATHERS)}на"
    return "person", f"{rng.choice(INTL_FIRST)} {rng.choice(INTL_LAST)}"


def company_inn(n: int, region: str = "77") -> str:
    """The n-th 10-digit INN of a region, with its check digit (n < 10,000,000)."""
    digits = [int(d) for d in f"{region}{n:07d}"]
    return "".join(map(str, [*digits, _check_digit(digits, _INN10)]))


def _inn(n: int, company: bool) -> str:
    """A unique INN with valid check digits: every company has one, a third of people."""
    if company:
        return company_inn(n)
    if n % 3:
        return ""
    digits = [int(d) for d in f"50{n:08d}"]
    digits.append(_check_digit(digits, _INN12_A))
    digits.append(_check_digit(digits, _INN12_B))
    return "".join(map(str, digits))


Batch = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]], records.Rows]


def _batches(
    db: Db, clients: int, managers: Sequence[tuple[int, str]], history: records.History, now: int
) -> Iterator[Batch]:
    """Clients, their phones/e-mails, tags and history, BATCH clients at a time
    (deterministic: the same size always gives the same data)."""
    rng = random.Random(SEED)
    two_years, one_year = 730 * 86400, 365 * 86400
    client_rows: list[tuple[Any, ...]] = []
    point_rows: list[tuple[Any, ...]] = []
    tag_rows: list[tuple[Any, ...]] = []
    history_rows = records.Rows()
    for n in range(1, clients + 1):
        kind, name = _name(rng, n)
        company = kind == "company"
        last = now - rng.randrange(two_years)
        deleted = db.timestamp(last) if rng.random() < 0.005 else None
        if n <= history.heavy:
            deleted = None  # the card scenario's clients stay live
        owner, owner_name = managers[(n - 1) % len(managers)]
        created = last - rng.randrange(one_year)
        address = (
            f"г. {rng.choice(CITIES)}, ул. {rng.choice(STREETS)}, д. {rng.randrange(1, 120)}"
            if company
            else ""
        )
        client_rows.append(
            (
                n,
                kind,
                name,
                search_key(name),
                "",
                _inn(n, company),
                "770101001" if company else "",
                address,
                rng.choice(SOURCES),
                "",
                owner,
                db.timestamp(created),
                db.timestamp(last),
                db.timestamp(last),
                deleted,
            )
        )
        point_rows.append((n, "phone", f"+7916{n:07d}", 0))
        if rng.random() < 0.5:
            point_rows.append((n, "phone", f"+7495{n:07d}", 1))
        if rng.random() < 2 / 3:
            email = f"{rng.choice(MAIL_LOCALS)}{n}@{rng.choice(MAIL_DOMAINS)}"
            point_rows.append((n, "email", email, 0))
        if rng.random() < 0.3:
            tag_rows.append((n, rng.choice(TAGS)))
        history.add(history_rows, n, name, owner, owner_name, created, last)
        if len(client_rows) == BATCH:
            yield client_rows, point_rows, tag_rows, history_rows
            client_rows, point_rows, tag_rows = [], [], []
            history_rows = records.Rows()
    if client_rows:
        yield client_rows, point_rows, tag_rows, history_rows


# --- loading -------------------------------------------------------------------------------


async def _sqlite_schema(db: Db, kind: str) -> list[tuple[str, str]]:
    """(name, CREATE statement) of the bulk tables' SQLite objects of one kind, those
    SQLite made for a constraint (no statement) left out."""
    marks = ", ".join("?" for _ in BULK_TABLES)
    return await db.fetch(
        "SELECT name, sql FROM sqlite_master WHERE type = ? AND sql IS NOT NULL "
        f"AND tbl_name IN ({marks})",
        kind,
        *BULK_TABLES,
    )


async def _secondary_indexes(db: Db) -> list[tuple[str, str]]:
    """(name, CREATE statement) of the bulk tables' indexes that no constraint owns."""
    if db.is_sqlite:
        return await _sqlite_schema(db, "index")
    return await db.fetch(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = ANY(SELECT to_regclass(t) FROM unnest($1::text[]) AS t) "
        "AND NOT i.indisprimary "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)",
        list(BULK_TABLES),
    )


async def _sqlite_triggers(db: Db) -> list[tuple[str, str]]:
    """(name, CREATE statement) of the triggers on the bulk tables (they keep the name
    search's trigram index in step): dropped for the load, the index rebuilt after it
    in one pass (`_rebuild_text_indexes`)."""
    return await _sqlite_schema(db, "trigger") if db.is_sqlite else []


async def _rebuild_text_indexes(db: Db) -> None:
    """SQLite's FTS5 indexes over the bulk tables, rebuilt from their content tables."""
    if not db.is_sqlite:
        return
    for (name,) in await db.fetch(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE '%USING fts5%'"
    ):
        await db.execute(f"INSERT INTO {name}({name}) VALUES ('rebuild')")


async def _wipe(db: Db) -> None:
    """Remove a previous bench dataset (the caller checked there is nothing else)."""
    if db.is_sqlite:
        for table in (
            "core_timeline",
            "core_task",
            "core_attachment",
            "core_deal",
            "core_contact_point",
            "core_client_tag",
            "core_contact",
            "core_client",
        ):
            await db.execute(f"DELETE FROM {table}")
    else:
        await db.execute("TRUNCATE core_client RESTART IDENTITY CASCADE")
    bench_ids = f"SELECT id FROM core_user WHERE {_BENCH_USERS}"
    for table, column in (
        ("core_session", '"user"'),
        ("core_api_token", '"user"'),
        ("core_notification", '"user"'),
    ):
        await db.execute(f"DELETE FROM {table} WHERE {column} IN ({bench_ids})")
    await db.execute(f"DELETE FROM core_user WHERE {_BENCH_USERS}")
    await db.execute(f"DELETE FROM core_team WHERE {_BENCH_TEAMS}")


async def _create_users(db: Db, now: int) -> list[tuple[int, str]]:
    """5 teams of 10 managers and a head each, plus an admin; returns the managers'
    (id, full name)."""
    password_hash = hash_password(PASSWORD)
    created = db.timestamp(now)
    managers: list[tuple[int, str]] = []
    insert = (
        "INSERT INTO core_user (username, full_name, email, password_hash, role, team, locale, "
        "active, must_change_password, totp_secret, created_at) "
        "VALUES ($1, $2, '', $3, $4, $5, '', $6, $7, '', $8)"
    )
    for t in range(1, TEAMS + 1):
        await db.execute("INSERT INTO core_team (name) VALUES ($1)", f"Bench team {t}")
        team = await db.value("SELECT id FROM core_team WHERE name = $1", f"Bench team {t}")
        people = [(f"bench_h{t}", f"Head {t}", "head")]
        for i in range((t - 1) * MANAGERS_PER_TEAM + 1, t * MANAGERS_PER_TEAM + 1):
            people.append((f"bench_m{i:02d}", f"Manager {i:02d}", "manager"))
        for username, full_name, role in people:
            await db.execute(
                insert, username, full_name, password_hash, role, team, True, False, created
            )
            if role == "manager":
                user_id = await db.value("SELECT id FROM core_user WHERE username = $1", username)
                managers.append((user_id, full_name))
    await db.execute(
        insert, "bench_admin", "Bench Admin", password_hash, "admin", None, True, False, created
    )
    return managers


async def _foreign_keys(db: Db) -> list[tuple[str, str, str]]:
    """(table, name, definition) of the bulk tables' foreign keys (PostgreSQL only: SQLite
    checks them row by row, which is cheap at the sizes it is benchmarked with)."""
    if db.is_sqlite:
        return []
    return await db.fetch(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE contype = 'f' AND conrelid = ANY(SELECT to_regclass(t) FROM unnest($1::text[]) t)",
        list(BULK_TABLES),
    )


async def _pipelines(db: Db) -> list[records.Pipeline]:
    """The install's default pipeline plus two more (created once), with their stages."""
    existing = await db.fetch("SELECT name FROM core_pipeline")
    if not existing:
        raise DatasetError("no pipeline: run `kartoteka migrate` first (it creates the default)")
    names = {row[0] for row in existing}
    for position, (name, stages) in enumerate(records.EXTRA_PIPELINES, start=len(existing)):
        if len(names) >= 3 or name in names:
            continue
        await db.execute(
            "INSERT INTO core_pipeline (name, position, archived) VALUES ($1, $2, $3)",
            name,
            position,
            False,
        )
        pipeline = await db.value("SELECT id FROM core_pipeline WHERE name = $1", name)
        for stage_position, (stage, outcome) in enumerate(stages):
            await db.execute(
                "INSERT INTO core_stage (pipeline, name, position, outcome) VALUES ($1, $2, $3, $4)",
                pipeline,
                stage,
                stage_position,
                outcome,
            )
        names.add(name)
    pipelines = []
    for (pipeline_id,) in await db.fetch(
        "SELECT id FROM core_pipeline WHERE NOT archived ORDER BY position, id LIMIT 3"
    ):
        rows = await db.fetch(
            "SELECT id, name, outcome FROM core_stage WHERE pipeline = $1 ORDER BY position, id",
            pipeline_id,
        )
        pipelines.append(records.Pipeline(pipeline_id, tuple(records.Stage(*r) for r in rows)))
    return pipelines


async def rebuild_deal_totals(db: Db) -> None:
    """What core.services.deal_totals.rebuild does, on this connection (inside the load's
    transaction): rows written around the deals service need their totals recomputed."""
    for statement in deal_totals.REBUILD:
        await db.execute(statement)


async def _load(db: Db, clients: int, log: Callable[[str], None]) -> None:
    now = int(time.time())
    if not db.is_sqlite:
        await db.execute("SET LOCAL synchronous_commit = off")
        await db.execute("SET LOCAL maintenance_work_mem = '512MB'")
    managers = await _create_users(db, now)
    zone = ZoneInfo(_install_zone())
    history = records.History(
        pipelines=await _pipelines(db),
        timestamp=db.timestamp,
        day=db.day,
        now=now,
        heavy=records.heavy_clients(len(managers)),
        zone=zone,
    )
    indexes = await _secondary_indexes(db)
    foreign_keys = await _foreign_keys(db)
    for table, name, _ in foreign_keys:
        await db.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        await db.execute(f'DROP INDEX "{name}"')
    started = time.monotonic()
    for client_rows, point_rows, tag_rows, more in _batches(db, clients, managers, history, now):
        await db.copy("core_client", CLIENT_COLUMNS, client_rows)
        await db.copy("core_contact", records.CONTACT_COLUMNS, more.contacts)
        await db.copy("core_contact_point", POINT_COLUMNS, point_rows)
        await db.copy("core_contact_point", records.CONTACT_POINT_COLUMNS, more.points)
        await db.copy("core_client_tag", TAG_COLUMNS, tag_rows)
        await db.copy("core_deal", records.DEAL_COLUMNS, more.deals)
        await db.copy("core_task", records.TASK_COLUMNS, more.tasks)
        await db.copy("core_timeline", records.TIMELINE_COLUMNS, more.timeline)
        log(
            f"  {client_rows[-1][0]:>9,} clients and their history ({time.monotonic() - started:.0f} s)"
        )
    log(f"  rebuilding {len(indexes)} indexes, {len(foreign_keys)} foreign keys")
    for _, statement in indexes:
        await db.execute(statement)
    for table, name, definition in foreign_keys:  # re-validated in one pass each
        await db.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    await rebuild_deal_totals(db)
    if not db.is_sqlite:
        for table in BULK_TABLES:
            await db.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT coalesce(max(id), 1) FROM {table}))"
            )


def _install_zone() -> str:
    """The time zone task payloads are written in, as the services write them."""
    from core.settings import get_settings

    return get_settings().timezone


async def _is_current(db: Db, clients: int) -> bool:
    """The dataset of this size and shape is loaded (clients the write scenarios add are
    removed by `remove_written` and do not count)."""
    users = await db.value(f"SELECT count(*) FROM core_user WHERE {_BENCH_USERS}")
    expected_users = TEAMS * (MANAGERS_PER_TEAM + 1) + 1
    if users != expected_users:
        return False
    expected = records.shape(clients, MANAGERS)
    counts = await db.fetch(
        "SELECT (SELECT count(*) FROM core_client WHERE id <= $1), "
        "(SELECT count(*) FROM core_client WHERE id > $1), "
        "(SELECT count(*) FROM core_contact), (SELECT count(*) FROM core_deal), "
        "(SELECT count(*) FROM core_task), (SELECT count(*) FROM core_timeline WHERE id <= $2)",
        clients,
        expected.timeline,
    )
    return counts[0] == (
        clients,
        0,
        expected.contacts,
        expected.deals,
        expected.tasks,
        expected.timeline,
    )


async def _check_only_bench_data(db: Db) -> None:
    """Reloading wipes clients, deals and tasks: refuse a database holding anyone else's."""
    foreign = await db.value(
        "SELECT (SELECT count(*) FROM core_client c JOIN core_user u ON u.id = c.responsible "
        f"WHERE NOT u.{_BENCH_USERS}) "
        "+ (SELECT count(*) FROM core_deal d JOIN core_user u ON u.id = d.responsible "
        f"WHERE NOT u.{_BENCH_USERS}) "
        "+ (SELECT count(*) FROM core_task t JOIN core_user u ON u.id = t.assignee "
        f"WHERE NOT u.{_BENCH_USERS})"
    )
    if foreign:
        raise DatasetError(
            f"{db.url} holds {foreign} clients, deals or tasks that are not bench data; "
            "use an empty database for the benchmark"
        )


async def _target(db: Db, username: str) -> Target:
    """The user's first live company with a phone, an e-mail and an INN."""
    rows = await db.fetch(
        "SELECT c.id, c.name, p.value, e.value, c.inn FROM core_client c "
        "JOIN core_user u ON u.id = c.responsible "
        "JOIN core_contact_point p ON p.client = c.id AND p.kind = 'phone' AND p.position = 0 "
        "JOIN core_contact_point e ON e.client = c.id AND e.kind = 'email' "
        "WHERE u.username = $1 AND c.kind = 'company' AND c.deleted_at IS NULL AND c.inn <> '' "
        "ORDER BY c.id LIMIT 1",
        username,
    )
    if not rows:
        raise DatasetError(f"{username} has no client with a phone, e-mail and INN")
    return Target(*rows[0])


async def _card_client(db: Db, username: str) -> int:
    """The user's first client with exactly HEAVY_ENTRIES timeline entries."""
    rows = await db.fetch(
        "SELECT c.id FROM core_client c JOIN core_user u ON u.id = c.responsible "
        "WHERE u.username = $1 AND c.id <= $2 AND c.deleted_at IS NULL ORDER BY c.id LIMIT 1",
        username,
        records.heavy_clients(MANAGERS),
    )
    if not rows:
        raise DatasetError(f"{username} has no client with {records.HEAVY_ENTRIES} entries")
    entries = await db.value("SELECT count(*) FROM core_timeline WHERE client = $1", rows[0][0])
    if entries != records.HEAVY_ENTRIES:
        raise DatasetError(f"client {rows[0][0]} has {entries} timeline entries, not 500")
    return int(rows[0][0])


async def remove_written(database_url: str, clients: int) -> None:
    """Undo what the write scenarios added on top of the dataset: their clients and the
    timeline entries of their moves and completions (tasks and deals they changed are
    put back by the scenarios themselves)."""
    async with Db(database_url) as db:
        await db.execute("DELETE FROM core_client WHERE id > $1", clients)
        timeline = records.shape(clients, MANAGERS).timeline
        await db.execute("DELETE FROM core_timeline WHERE id > $1", timeline)


async def _describe(db: Db, clients: int, load_seconds: float | None) -> Dataset:
    """The users to log in as, the client every search looks for, one out of scope, and
    the clients whose cards are measured (the admin's is in another team)."""
    return Dataset(
        clients=clients,
        manager="bench_m07",
        head="bench_h1",
        admin="bench_admin",
        password=PASSWORD,
        target=await _target(db, "bench_m07"),
        foreign=await _target(db, "bench_m49"),
        cards={
            "bench_m07": await _card_client(db, "bench_m07"),
            "bench_admin": await _card_client(db, "bench_m49"),
        },
        load_seconds=load_seconds,
    )


async def ensure_dataset(
    database_url: str, clients: int, log: Callable[[str], None] = print
) -> Dataset:
    """Reuse the dataset when it has the right size, else (re)load it. Needs a migrated DB."""
    if clients < 1000:
        raise DatasetError("use at least 1,000 clients")
    async with Db(database_url) as db:
        if await _is_current(db, clients):
            log(f"dataset: reusing {clients:,} clients in {database_url}")
            return await _describe(db, clients, None)
        await _check_only_bench_data(db)
        log(f"dataset: loading {clients:,} clients into {database_url}")
        started = time.monotonic()
        await db.execute("BEGIN")
        try:
            triggers = await _sqlite_triggers(db)
            for name, _ in triggers:
                await db.execute(f'DROP TRIGGER "{name}"')
            await _wipe(db)
            await _load(db, clients, log)
            for _, statement in triggers:
                await db.execute(statement)
            await _rebuild_text_indexes(db)
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        await db.execute("COMMIT")
        tables = (*BULK_TABLES, "core_user")
        # VACUUM too on PostgreSQL: it sets the visibility map that index-only scans
        # need, as autovacuum would have on a database that grew over years.
        await db.execute("ANALYZE" if db.is_sqlite else f"VACUUM ANALYZE {', '.join(tables)}")
        seconds = time.monotonic() - started
        log(f"dataset: loaded in {seconds:.0f} s")
        return await _describe(db, clients, seconds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Load the benchmark dataset (migrate first).")
    parser.add_argument("--clients", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    args = parser.parse_args(argv)
    dataset = asyncio.run(ensure_dataset(args.database_url, args.clients))
    print(dataset)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
