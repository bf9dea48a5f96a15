"""`kartoteka demo`: a believable small company to try the product on.

Goes through the same services as the UI, so the demo data is validated, has its
timeline, and looks exactly like data a manager would have typed in.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from core.db import bind_tables
from core.services import clients as client_service
from core.services import deals, tasks, users
from core.services.common import utcnow
from core.tables import User

DEMO_PASSWORD = "demo-password"
MANAGERS = [
    ("ivanova", "Анна Иванова", "head"),
    ("petrov", "Пётр Петров", "manager"),
    ("sidorova", "Мария Сидорова", "manager"),
    ("kuznetsov", "Олег Кузнецов", "manager"),
]
_ADJECTIVES = [
    "Северная",
    "Уральская",
    "Быстрая",
    "Первая",
    "Сибирская",
    "Волжская",
    "Новая",
    "Точная",
    "Светлая",
    "Балтийская",
]
_NOUNS = [
    "Логистика",
    "Мебель",
    "Техника",
    "Кровля",
    "Полиграфия",
    "Оптика",
    "Энергия",
    "Сталь",
    "Упаковка",
    "Стройка",
]
_FORMS = ["ООО", "АО", "ИП", "ООО", "ООО"]
_FIRST = [
    "Алексей",
    "Ирина",
    "Сергей",
    "Елена",
    "Дмитрий",
    "Ольга",
    "Николай",
    "Татьяна",
    "Игорь",
    "Наталья",
]
_LAST = [
    "Смирнов",
    "Волков",
    "Соколов",
    "Морозов",
    "Лебедев",
    "Козлов",
    "Новиков",
    "Попов",
    "Орлов",
    "Зайцев",
]
_INTERNATIONAL = ["Baltic Trade GmbH", "Nordic Parts Oy", "Silk Road LLC", "Anatolia Tekstil A.Ş."]
_SOURCES = ["сайт", "рекомендация", "выставка", "холодный звонок", "реклама"]
_TAGS = ["vip", "опт", "розница", "регион", "новый", "постоянный"]
_DEAL_TITLES = [
    "Поставка",
    "Годовой контракт",
    "Пилотный заказ",
    "Монтаж",
    "Сервисное обслуживание",
]
_LOST_REASONS = ["Дорого", "Выбрали конкурента", "Нет бюджета", "Пропала потребность"]
_TASKS = [
    "Перезвонить",
    "Отправить КП",
    "Согласовать договор",
    "Выставить счёт",
    "Назначить встречу",
]


def _inn(rng: random.Random, person: bool) -> str:
    """A random INN with valid check digits."""
    from core.validation import _INN10, _INN12_A, _INN12_B, _check_digit

    if not person:
        digits = [rng.randint(0, 9) for _ in range(9)]
        return "".join(map(str, [*digits, _check_digit(digits, _INN10)]))
    digits = [rng.randint(0, 9) for _ in range(10)]
    digits.append(_check_digit(digits, _INN12_A))
    digits.append(_check_digit(digits, _INN12_B))
    return "".join(map(str, digits))


def _phone(rng: random.Random) -> str:
    number = f"9{rng.randint(10, 99)}{rng.randint(1000000, 9999999)}"
    spellings = [
        f"8 ({number[:3]}) {number[3:6]}-{number[6:8]}-{number[8:]}",
        f"+7{number}",
        f"+7 {number[:3]} {number[3:6]} {number[6:]}",
    ]
    return rng.choice(spellings)


def _client_data(rng: random.Random, index: int, manager_id: int) -> dict[str, Any]:
    kind = "person" if index % 5 == 0 else "company"
    if kind == "person":
        name = f"{rng.choice(_LAST)} {rng.choice(_FIRST)}"
        email = f"client{index}@mail.ru"
    elif index % 23 == 0:
        name = rng.choice(_INTERNATIONAL) + f" {index}"
        email = f"office{index}@example.com"
    else:
        name = f"{rng.choice(_FORMS)} «{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} {index}»"
        email = f"info{index}@example.ru"
    return {
        "kind": kind,
        "name": name,
        "inn": _inn(rng, kind == "person"),
        "phones": _phone(rng),
        "emails": email,
        "address": f"г. Екатеринбург, ул. Ленина, д. {index % 120 + 1}",
        "source": rng.choice(_SOURCES),
        "tags": ", ".join(rng.sample(_TAGS, rng.randint(0, 2))),
        "responsible": manager_id,
    }


async def load_demo(clients: int = 300, seed: int = 7) -> str:
    bind_tables()
    if await User.exists().where(User.username == MANAGERS[0][0]):
        return "the demo company is already loaded"
    rng = random.Random(seed)
    count = clients
    manager_ids = [
        (await users.create_user(login, name, DEMO_PASSWORD, role=role))["id"]
        for login, name, role in MANAGERS
    ]
    pipeline = (await deals.list_pipelines())[0]
    open_stages = [s for s in pipeline["stages"] if s["outcome"] == "open"]
    won = next(s for s in pipeline["stages"] if s["outcome"] == "won")
    lost = next(s for s in pipeline["stages"] if s["outcome"] == "lost")
    now = utcnow()
    deal_count = task_count = 0
    for index in range(1, count + 1):
        manager_id = manager_ids[index % len(manager_ids)]
        client_id = await client_service.create_client(
            _client_data(rng, index, manager_id), manager_id
        )
        if index % 4 == 0:
            await client_service.add_note(
                client_id, "Обсудили условия поставки, ждут КП.", manager_id
            )
        for _ in range(rng.choice([0, 1, 1, 2])):
            deal_id = await deals.create_deal(
                {
                    "title": f"{rng.choice(_DEAL_TITLES)} №{index}",
                    "client": client_id,
                    "pipeline": pipeline["id"],
                    "stage": open_stages[0]["id"],
                    "amount": str(rng.randint(5, 900) * 1000),
                    "responsible": manager_id,
                    "expected_close": (now + timedelta(days=rng.randint(5, 60))).date().isoformat(),
                },
                manager_id,
            )
            deal_count += 1
            target = rng.choice([*open_stages, won, lost])
            if target["id"] != open_stages[0]["id"]:
                reason = rng.choice(_LOST_REASONS) if target["outcome"] == "lost" else ""
                await deals.move_deal(deal_id, target["id"], manager_id, lost_reason=reason)
        if index % 3 == 0:
            due = now + timedelta(hours=rng.choice([-72, -30, -3, 1, 4, 26, 80]))
            await tasks.create_task(
                {
                    "title": f"{rng.choice(_TASKS)}: {index}",
                    "due_at": due,
                    "assignee": manager_id,
                    "client": client_id,
                    "priority": rng.choice([1, 2, 2, 3]),
                },
                manager_id,
            )
            task_count += 1
    logins = ", ".join(login for login, _name, _role in MANAGERS)
    return (
        f"demo company loaded: {count} clients, {deal_count} deals, {task_count} tasks.\n"
        f"Log in as {logins} with the password {DEMO_PASSWORD!r} (or as admin)."
    )
