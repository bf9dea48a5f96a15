"""Clients: validation next to the field, search in any spelling, keyset pages, duplicates."""

from __future__ import annotations

from typing import Any

import pytest

from core.services import clients
from core.services.clients import ClientQuery
from core.validation import ValidationError, is_valid_inn
from tests.support import field_error, post


def test_inn_check_digits() -> None:
    assert is_valid_inn("7707083893")  # Sberbank
    assert is_valid_inn("500100732259")  # a valid 12-digit INN
    assert not is_valid_inn("7707083894")
    assert not is_valid_inn("50010073225")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("inn", "7707083894"),
        ("kpp", "77-0101-001"),
        ("phones", "12345"),
        ("emails", "not-an-email"),
        ("name", "x" * 256),
        ("notes", "y" * 20001),
        ("kind", "alien"),
    ],
)
async def test_bad_input_is_shown_next_to_the_field_and_nothing_is_saved(
    as_manager: Any, manager: dict[str, Any], field: str, value: str
) -> None:
    data = {"kind": "company", "name": "Valid name", "responsible": manager["id"], field: value}
    response = await post(as_manager, "/clients", data, headers={"hx-request": "true"})
    assert response.status_code == 422
    assert field_error(response.text, field), response.text
    rows, _ = await clients.list_clients(ClientQuery())
    assert rows == []


async def test_phone_and_email_are_normalised(db: None, manager: dict[str, Any]) -> None:
    client_id = await clients.create_client(
        {
            "name": "Иванов Иван",
            "kind": "person",
            "phones": "8 (912) 345-67-89\n+44 20 7946 0958",
            "emails": "Ivan@Example.COM",
            "responsible": manager["id"],
        },
        manager["id"],
    )
    client = await clients.get_client(client_id)
    assert client["phones"] == ["+79123456789", "+442079460958"]
    assert client["emails"] == ["ivan@example.com"]


@pytest.mark.parametrize(
    "query",
    ["9123456789", "+7 912 345 67 89", "89123456789", "ромашка", "РОМ", "info@roma", "7707083893"],
)
async def test_search_finds_the_client_in_any_spelling(
    db: None, manager: dict[str, Any], query: str
) -> None:
    await clients.create_client(
        {
            "name": "ООО «Ромашка»",
            "inn": "7707083893",
            "phones": "8 (912) 345-67-89",
            "emails": "info@romashka.ru",
            "responsible": manager["id"],
        },
        manager["id"],
    )
    await clients.create_client({"name": "Василёк", "responsible": manager["id"]}, manager["id"])
    rows, _ = await clients.list_clients(ClientQuery(search=query))
    assert [row["name"] for row in rows] == ["ООО «Ромашка»"]


async def test_name_search_finds_a_fragment_and_follows_renames(
    db: None, manager: dict[str, Any]
) -> None:
    """From three characters on a name search matches anywhere in the name (trigram
    index: pg_trgm on PostgreSQL, FTS5 on SQLite, kept in step as names change)."""

    async def names(search: str) -> list[str]:
        rows, _ = await clients.list_clients(ClientQuery(search=search))
        return [row["name"] for row in rows]

    east = await clients.create_client(
        {"name": "ЗАО «Восток-57»", "responsible": manager["id"]}, manager["id"]
    )
    await clients.create_client(
        {"name": "Петров Иван Сергеевич", "kind": "person", "responsible": manager["id"]},
        manager["id"],
    )
    await clients.create_client({"name": "Запад", "responsible": manager["id"]}, manager["id"])
    assert await names("сток") == ["ЗАО «Восток-57»"]
    assert await names("ТОК-57") == ["ЗАО «Восток-57»"]
    assert await names("иван") == ["Петров Иван Сергеевич"]  # not only the first word
    assert await names("за") == ["Запад"]  # two letters: the start of the name only
    assert await names("50%") == [] and await names("к_5") == []  # no LIKE wildcards
    with pytest.MonkeyPatch.context() as patch:  # a fragment in too many names: starts only
        patch.setattr(clients, "FRAGMENT_LIMIT", 1)
        await clients.create_client({"name": "Токарь", "responsible": manager["id"]}, manager["id"])
        assert await names("ток") == ["Токарь"]
        assert sorted(await names("ток-5")) == ["ЗАО «Восток-57»"]
    await clients.update_client(
        east,
        {"name": "ЗАО «Север-57»", "responsible": manager["id"]},
        manager["id"],
    )
    assert await names("сток") == [] and await names("евер") == ["ЗАО «Север-57»"]
    await clients.delete_client(east, manager["id"])
    assert await names("евер") == []


async def test_keyset_pages_cover_every_client_once(db: None, manager: dict[str, Any]) -> None:
    for index in range(7):
        await clients.create_client(
            {"name": f"Client {index % 3}", "responsible": manager["id"]}, manager["id"]
        )
    for sort in ("name", "activity", "created"):
        seen: list[int] = []
        cursor = ""
        while True:
            rows, cursor = await clients.list_clients(ClientQuery(sort=sort, cursor=cursor, size=3))
            seen += [row["id"] for row in rows]
            if not cursor:
                break
        assert sorted(seen) == sorted(set(seen)) and len(seen) == 7, sort


async def test_duplicate_warning_then_create_anyway(
    as_manager: Any, manager: dict[str, Any]
) -> None:
    await clients.create_client(
        {"name": "First", "phones": "+79123456789", "responsible": manager["id"]}, manager["id"]
    )
    data = {"name": "Second", "phones": "8 912 345-67-89", "responsible": manager["id"]}
    warned = await post(as_manager, "/clients", data)
    assert warned.status_code == 409
    assert "Possible duplicate" in warned.text and "First" in warned.text
    created = await post(
        as_manager, "/clients", {**data, "confirm_duplicates": "1"}, follow_redirects=False
    )
    assert created.status_code == 303


async def test_deleted_client_url_is_a_404_page(as_admin: Any, admin: dict[str, Any]) -> None:
    client_id = await clients.create_client(
        {"name": "Gone", "responsible": admin["id"]}, admin["id"]
    )
    response = await post(as_admin, f"/clients/{client_id}/delete", follow_redirects=False)
    assert response.status_code == 303
    page = await as_admin.get(f"/clients/{client_id}")
    assert page.status_code == 404
    assert "Traceback" not in page.text and "does not exist" in page.text
    missing = await as_admin.get("/clients/999999")
    assert missing.status_code == 404


async def test_manager_cannot_delete_clients(as_manager: Any, manager: dict[str, Any]) -> None:
    client_id = await clients.create_client(
        {"name": "Kept", "responsible": manager["id"]}, manager["id"]
    )
    response = await post(as_manager, f"/clients/{client_id}/delete")
    assert response.status_code == 403
    assert (await clients.get_client(client_id))["name"] == "Kept"


async def test_update_records_changed_fields_on_the_timeline(
    db: None, manager: dict[str, Any]
) -> None:
    from core.services import timeline

    client_id = await clients.create_client(
        {"name": "Before", "responsible": manager["id"]}, manager["id"]
    )
    await clients.update_client(
        client_id, {"name": "After", "source": "сайт", "responsible": manager["id"]}, manager["id"]
    )
    entries, _ = await timeline.page(client_id)
    assert entries[0]["kind"] == "client.updated"
    assert set(entries[0]["payload"]["fields"]) == {"name", "source"}
    with pytest.raises(ValidationError):
        await clients.update_client(
            client_id, {"name": "", "responsible": manager["id"]}, manager["id"]
        )
    assert (await clients.get_client(client_id))["name"] == "After"


async def test_email_lookup_falls_back_to_a_corporate_domain_never_free_mail(
    db: None, manager: dict[str, Any]
) -> None:
    acme = await clients.create_client(
        {"name": "Acme", "responsible": manager["id"], "emails": "boss@acme.example"},
        manager["id"],
    )
    await clients.create_client(
        {"name": "Private", "responsible": manager["id"], "emails": "someone@gmail.com"},
        manager["id"],
    )
    assert await clients.find_client(email="Other.Person@ACME.example") == acme
    assert await clients.find_client(email="stranger@gmail.com") is None
    assert await clients.find_client(email="someone@gmail.com") is not None
    await clients.create_client(
        {"name": "Acme branch", "responsible": manager["id"], "emails": "branch@acme.example"},
        manager["id"],
    )
    assert await clients.find_client(email="third@acme.example") is None, "ambiguous domain"
    assert await clients.find_client(email="boss@acme.example") == acme, "exact still wins"


async def test_contacts_with_their_own_phones_are_found_by_lookup(
    db: None, manager: dict[str, Any]
) -> None:
    client_id = await clients.create_client(
        {"name": "Company", "responsible": manager["id"]}, manager["id"]
    )
    await clients.save_contact(
        client_id, {"name": "Пётр", "phones": "+7 343 123-45-67"}, manager["id"]
    )
    assert await clients.find_client(phone="8 343 123 45 67") == client_id
    with pytest.raises(ValidationError) as error:
        await clients.save_contact(client_id, {"name": "", "emails": "bad"}, manager["id"])
    assert set(error.value.errors) == {"name", "emails"}
