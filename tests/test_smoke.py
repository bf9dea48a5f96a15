from tests.support import field_error, post


async def test_login_and_create_client(as_manager, manager):
    r = await post(
        as_manager,
        "/clients",
        {
            "kind": "company",
            "name": "ООО «Ромашка»",
            "phones": "8 (912) 345-67-89",
            "responsible": manager["id"],
        },
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    card = await as_manager.get(r.headers["location"])
    assert "Ромашка" in card.text
    found = await as_manager.get("/clients?q=9123456789")
    assert "Ромашка" in found.text
    bad = await post(
        as_manager,
        "/clients",
        {"kind": "company", "name": "X", "inn": "1234567890", "responsible": manager["id"]},
    )
    assert bad.status_code == 422
    assert field_error(bad.text, "inn")
