"""What a client's history looks like in the benchmark: contacts, deals, tasks, timeline.

Per client, in the shape issue 7 asks for at any size: on average 2 contacts (each
with a phone, most with an e-mail: phone search finds contacts too), 1 deal across the
3 pipelines, 3 tasks and 5 timeline entries. The counts follow a fixed cycle over the
client number (so the totals are exact and a loaded dataset can be recognised by them);
everything else is drawn from a seeded generator. The first two clients of every
manager are the card scenario: exactly HEAVY_ENTRIES timeline entries each.

Every row is what the services would have written: deals belong to the client's manager
and carry ``closed_at`` when won or lost, done tasks their ``completed_by``, past-due
tasks their ``reminded_at`` (the reminder job has run), timeline payloads the keys the
entry templates read, and the client's ``last_activity_at`` is its newest entry.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

CONTACTS_CYCLE = (1, 2, 3, 2)
DEALS_CYCLE = (0, 1, 2, 1)
TASKS_CYCLE = (1, 3, 5, 3)
TIMELINE_CYCLE = (3, 5, 7, 5)
HEAVY_PER_MANAGER = 2
HEAVY_ENTRIES = 500
DAY = 86_400

CONTACT_COLUMNS = ("id", "client", "name", "position", "notes", "created_at", "deleted_at")
CONTACT_POINT_COLUMNS = ("client", "contact", "kind", "value", "position")
DEAL_COLUMNS = (
    "id",
    "title",
    "client",
    "pipeline",
    "stage",
    "amount_minor",
    "currency",
    "responsible",
    "expected_close",
    "lost_reason",
    "closed_at",
    "created_at",
    "updated_at",
    "deleted_at",
)
TASK_COLUMNS = (
    "id",
    "title",
    "description",
    "due_at",
    "assignee",
    "client",
    "deal",
    "priority",
    "done_at",
    "completed_by",
    "reminded_at",
    "created_by",
    "created_at",
)
TIMELINE_COLUMNS = ("id", "client", "deal", "kind", "occurred_at", "author", "payload")

EXTRA_PIPELINES = (
    (
        "Тендеры",
        (
            ("Заявка", "open"),
            ("Подготовка", "open"),
            ("Подано", "open"),
            ("Выиграли", "won"),
            ("Проиграли", "lost"),
        ),
    ),
    (
        "Сервисные контракты",
        (
            ("Запрос", "open"),
            ("В работе", "open"),
            ("Согласование", "open"),
            ("Подписан", "won"),
            ("Отказ", "lost"),
        ),
    ),
)
PIPELINE_WEIGHTS = (0.6, 0.25, 0.15)
DEAL_TITLES = ("Поставка", "Годовой контракт", "Пилотный заказ", "Монтаж", "Supply", "Renewal")
LOST_REASONS = ("Дорого", "Выбрали конкурента", "Нет бюджета", "Пропала потребность")
TASK_TITLES = (
    "Перезвонить",
    "Отправить КП",
    "Согласовать договор",
    "Выставить счёт",
    "Назначить встречу",
    "Follow up",
)
NOTES = (
    "Обсудили условия поставки, ждут КП.",
    "Клиент просит скидку 5 % при предоплате.\nПерезвонить после праздников.",
    "Встреча в офисе: показали демо, интерес есть.",
    "Called, left a voicemail.",
    "Бухгалтерия подтвердила оплату.",
)
UPDATED_FIELDS = (["phones"], ["address"], ["emails", "notes"], ["tags"], ["inn", "kpp"])
POSITIONS = ("Директор", "Менеджер по закупкам", "Главный бухгалтер", "Head of procurement", "")
CONTACT_FIRST = ("Алексей", "Ирина", "Сергей", "Елена", "Дмитрий", "Ольга", "John", "Anna")
CONTACT_LAST = ("Смирнов", "Волкова", "Соколов", "Морозова", "Лебедев", "Smith", "Müller")
MAIL_DOMAINS = ("mail.ru", "yandex.ru", "gmail.com", "company.ru", "example.com")


@dataclass(frozen=True)
class Event:
    """Something that happened to a client, as its timeline entry will tell it."""

    kind: str
    payload: dict[str, Any]
    deal: int | None
    moment: int


@dataclass(frozen=True)
class Stage:
    id: int
    name: str
    outcome: str


@dataclass(frozen=True)
class Pipeline:
    id: int
    stages: tuple[Stage, ...]

    @property
    def open_stages(self) -> tuple[Stage, ...]:
        return tuple(s for s in self.stages if s.outcome == "open")

    def closed(self, outcome: str) -> Stage:
        return next(s for s in self.stages if s.outcome == outcome)


@dataclass(frozen=True)
class Shape:
    """Row counts of a dataset of N clients (the loader recognises a loaded one by them)."""

    contacts: int
    deals: int
    tasks: int
    timeline: int


def _cycle_total(cycle: Sequence[int], clients: int) -> int:
    full, rest = divmod(clients, len(cycle))
    return full * sum(cycle) + sum(cycle[n % len(cycle)] for n in range(1, rest + 1))


def heavy_clients(managers: int) -> int:
    """Clients 1..this many are the card scenario's (clients go round-robin to managers)."""
    return managers * HEAVY_PER_MANAGER


def shape(clients: int, managers: int) -> Shape:
    heavy = min(clients, heavy_clients(managers))
    timeline = _cycle_total(TIMELINE_CYCLE, clients) + sum(
        HEAVY_ENTRIES - TIMELINE_CYCLE[n % len(TIMELINE_CYCLE)] for n in range(1, heavy + 1)
    )
    return Shape(
        contacts=_cycle_total(CONTACTS_CYCLE, clients),
        deals=_cycle_total(DEALS_CYCLE, clients),
        tasks=_cycle_total(TASKS_CYCLE, clients),
        timeline=timeline,
    )


@dataclass
class Rows:
    """One batch of rows per table, in load order (parents first)."""

    contacts: list[tuple[Any, ...]] = field(default_factory=list)
    points: list[tuple[Any, ...]] = field(default_factory=list)
    deals: list[tuple[Any, ...]] = field(default_factory=list)
    tasks: list[tuple[Any, ...]] = field(default_factory=list)
    timeline: list[tuple[Any, ...]] = field(default_factory=list)


@dataclass
class History:
    """Generates the rows around each client; ids are handed out here, in order."""

    pipelines: Sequence[Pipeline]
    timestamp: Callable[[int], Any]
    """epoch -> the engine's timestamptz value."""
    day: Callable[[date], Any]
    """date -> the engine's date value."""
    now: int
    heavy: int
    zone: ZoneInfo
    rng: random.Random = field(default_factory=lambda: random.Random(20261123))
    next_contact: int = 1
    next_deal: int = 1
    next_task: int = 1
    next_entry: int = 1

    def add(
        self,
        rows: Rows,
        n: int,
        name: str,
        owner: int,
        owner_name: str,
        created: int,
        last: int,
    ) -> None:
        """Contacts, deals, tasks and timeline of client `n`, living from `created` to `last`."""
        span = max(last - created, 1)
        events: list[Event] = []
        for _ in range(CONTACTS_CYCLE[n % len(CONTACTS_CYCLE)]):
            events.append(self._contact(rows, n, created, span))
        deals: list[int] = []
        for _ in range(DEALS_CYCLE[n % len(DEALS_CYCLE)]):
            deal_events = self._deal(rows, n, owner, created, last, span)
            deals.append(deal_events[0].deal or 0)
            events += deal_events
        for _ in range(TASKS_CYCLE[n % len(TASKS_CYCLE)]):
            events += self._task(rows, n, owner, owner_name, deals, created, last, span)
        self._timeline(rows, n, name, owner, created, last, events)

    def _contact(self, rows: Rows, n: int, created: int, span: int) -> Event:
        rng, contact = self.rng, self.next_contact
        self.next_contact += 1
        first, last = rng.choice(CONTACT_FIRST), rng.choice(CONTACT_LAST)
        name = f"{last} {first}"
        added = created + rng.randrange(span)
        rows.contacts.append(
            (contact, n, name, rng.choice(POSITIONS), "", self.timestamp(added), None)
        )
        phone = f"+442079{contact:07d}" if contact % 10 == 0 else f"+7926{contact:07d}"
        rows.points.append((n, contact, "phone", phone, 0))
        if rng.random() < 0.7:
            local = f"{first[0]}.{last}".lower().encode("ascii", "ignore").decode() or "contact"
            email = f"{local}{contact}@{rng.choice(MAIL_DOMAINS)}"
            rows.points.append((n, contact, "email", email, 0))
        return Event("contact.added", {"name": name}, None, added)

    def _deal(
        self, rows: Rows, n: int, owner: int, created: int, last: int, span: int
    ) -> list[Event]:
        """A deal; returns its timeline events (created, and the move if it left stage 1)."""
        rng, deal = self.rng, self.next_deal
        self.next_deal += 1
        pipeline = rng.choices(self.pipelines, PIPELINE_WEIGHTS[: len(self.pipelines)])[0]
        roll = rng.random()
        if roll < 0.55:
            stage = rng.choice(pipeline.open_stages)
        else:
            stage = pipeline.closed("won" if roll < 0.8 else "lost")
        title = f"{rng.choice(DEAL_TITLES)} №{deal}"
        amount = rng.randrange(10, 5000) * 100_000
        currency = rng.choices(("RUB", "USD", "EUR"), (0.9, 0.05, 0.05))[0]
        opened = created + rng.randrange(span)
        closed = opened + rng.randrange(max(last - opened, 1)) if stage.outcome != "open" else None
        lost_reason = rng.choice(LOST_REASONS) if stage.outcome == "lost" else ""
        expected = datetime.fromtimestamp(opened + rng.randrange(30, 120) * DAY, UTC).date()
        rows.deals.append(
            (
                deal,
                title,
                n,
                pipeline.id,
                stage.id,
                amount,
                currency,
                owner,
                self.day(expected),
                lost_reason,
                self.timestamp(closed) if closed else None,
                self.timestamp(opened),
                self.timestamp(closed or opened),
                self.timestamp(last) if rng.random() < 0.005 else None,
            )
        )
        events = [
            Event(
                "deal.created",
                {"title": title, "amount_minor": amount, "currency": currency},
                deal,
                opened,
            )
        ]
        first = pipeline.stages[0]
        if stage.id != first.id:
            move = {
                "title": title,
                "from_stage": first.name,
                "to_stage": stage.name,
                "outcome": stage.outcome,
                "lost_reason": lost_reason,
            }
            events.append(Event("deal.stage_changed", move, deal, closed or opened + 1))
        return events

    def _task(
        self,
        rows: Rows,
        n: int,
        owner: int,
        owner_name: str,
        deals: Sequence[int],
        created: int,
        last: int,
        span: int,
    ) -> list[Event]:
        """A task: 60 % done in the past, the rest open, due within a month either way."""
        rng, task = self.rng, self.next_task
        self.next_task += 1
        title = rng.choice(TASK_TITLES)
        deal = rng.choice(deals) if deals and rng.random() < 0.5 else None
        done = rng.random() < 0.6
        if done:
            due = created + rng.randrange(span)
            done_at = min(due + rng.randrange(-DAY, DAY), self.now - 60)
        else:
            due = self.now + rng.randrange(-30 * DAY, 30 * DAY)
            done_at = None
        created_at = max(min(due, last) - rng.randrange(7 * DAY), created)
        rows.tasks.append(
            (
                task,
                title,
                "",
                self.timestamp(due),
                owner,
                n,
                deal,
                rng.choice((1, 2, 2, 3)),
                self.timestamp(done_at) if done_at else None,
                owner if done_at else None,
                self.timestamp(due) if due <= self.now else None,
                owner,
                self.timestamp(created_at),
            )
        )
        local_due = datetime.fromtimestamp(due, self.zone).isoformat()
        events = [
            Event(
                "task.created",
                {"task_id": task, "title": title, "due_at": local_due, "assignee": owner_name},
                deal,
                created_at,
            )
        ]
        if done_at:
            events.append(Event("task.completed", {"task_id": task, "title": title}, deal, done_at))
        return events

    def _timeline(
        self,
        rows: Rows,
        n: int,
        name: str,
        owner: int,
        created: int,
        last: int,
        events: list[Event],
    ) -> None:
        """'client.created' first, then a sample of the client's events and notes in time
        order (within its life), the newest moved to `last`, its last activity."""
        rng = self.rng
        count = HEAVY_ENTRIES if n <= self.heavy else TIMELINE_CYCLE[n % len(TIMELINE_CYCLE)]
        chosen = rng.sample(events, min(len(events), count - 1))
        while len(chosen) < count - 1:
            moment = created + 1 + rng.randrange(max(last - created - 1, 1))
            if rng.random() < 0.7:
                chosen.append(Event("note", {"text": rng.choice(NOTES)}, None, moment))
            else:
                fields = rng.choice(UPDATED_FIELDS)
                chosen.append(Event("client.updated", {"fields": fields}, None, moment))
        chosen.sort(key=lambda event: event.moment)
        entries = [
            (e.kind, e.payload, e.deal, min(max(e.moment, created + 1), last)) for e in chosen
        ]
        if entries:
            kind, payload, deal, _ = entries[-1]
            entries[-1] = (kind, payload, deal, last)
        entries.insert(0, ("client.created", {"name": name}, None, created))
        for kind, payload, deal, moment in entries:
            rows.timeline.append(
                (
                    self.next_entry,
                    n,
                    deal,
                    kind,
                    self.timestamp(moment),
                    owner,
                    json.dumps(payload, ensure_ascii=False),
                )
            )
            self.next_entry += 1
