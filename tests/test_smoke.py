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


async def test_every_response_tells_the_app_time(as_manager, client):
    """Server-Timing (core/web/timing.py): the benchmark's latencies are server time."""
    import re

    for http, url in (
        (as_manager, "/clients"),
        (as_manager, "/clients/999999"),
        (client, "/login"),
    ):
        response = await http.get(url)
        match = re.fullmatch(r"app;dur=(\d+\.\d\d)", response.headers.get("server-timing", ""))
        assert match and 0 < float(match.group(1)) < 10_000, (url, response.headers)
