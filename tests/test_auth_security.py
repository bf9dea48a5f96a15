"""Authentication hardening, through HTTP: CSRF, login throttling, the TOTP second
factor (optional and role-enforced), password change and reset, session cookies,
security headers."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pyotp
import pytest
from litestar.testing import AsyncTestClient

from core.services import totp, users
from core.tables import AuditEntry, Client, Role, User
from core.validation import ValidationError
from core.web.security import CSP
from tests.support import csrf_token, field_error, login, post

PASSWORD = "manager-password"


async def _post_login(client: Any, username: str, password: str) -> Any:
    await client.get("/login")
    return await post(
        client,
        "/login",
        {"username": username, "password": password, "next": "/clients"},
        follow_redirects=False,
    )


async def _audit(action: str, **where: Any) -> list[dict[str, Any]]:
    query = AuditEntry.select().where(AuditEntry.action == action)
    for column, value in where.items():
        query = query.where(getattr(AuditEntry, column) == value)
    return await query


def _secret(html: str) -> str:
    match = re.search(r'id="totp-secret">([A-Z2-7]{32})<', html)
    assert match, html
    return match.group(1)


def _code(secret: str, offset: int = 0) -> str:
    return pyotp.TOTP(secret).at(time.time() + offset)


def _settings(monkeypatch: pytest.MonkeyPatch, runtime: Any, **values: Any) -> None:
    monkeypatch.setattr(runtime, "settings", dataclasses.replace(runtime.settings, **values))


@pytest.fixture
async def second_client(app: Any, db: None) -> AsyncIterator[Any]:
    async with AsyncTestClient(app=app) as http:
        yield http


# --- CSRF ----------------------------------------------------------------------------


async def test_csrf_refused_without_token(as_manager, manager):
    data = {"kind": "company", "name": "Acme", "responsible": manager["id"]}
    plain = await as_manager.post("/clients", data=data, follow_redirects=False)
    assert plain.status_code == 403
    htmx = await as_manager.post(
        "/clients", data=data, headers={"hx-request": "true"}, follow_redirects=False
    )
    assert htmx.status_code == 403
    wrong = await as_manager.post(
        "/clients", data=data, headers={"x-csrftoken": "forged"}, follow_redirects=False
    )
    assert wrong.status_code == 403
    assert await Client.count() == 0
    accepted = await post(as_manager, "/clients", data, follow_redirects=False)
    assert accepted.status_code == 303
    assert await Client.count() == 1


# --- throttling ----------------------------------------------------------------------


async def test_account_locked_after_failures_even_with_right_password(client, manager):
    for _ in range(5):
        r = await _post_login(client, "manager", "wrong-password")
        assert r.status_code == 400
        assert "Wrong user name or password." in r.text
    r = await _post_login(client, "manager", PASSWORD)
    assert r.status_code == 429
    assert "Too many failed attempts. Try again in 15 minutes." in r.text
    assert "kartoteka_session" not in r.headers.get("set-cookie", "")
    failures = await _audit("login.failure", actor_name="manager")
    assert len(failures) == 5
    assert all(f["actor_id"] == manager["id"] for f in failures)
    assert await _audit("login.blocked", actor_name="manager")
    assert not await _audit("login.success")
    # another account from the same address is not locked by these
    await users.create_user("other", "Olga Other", "other-password")
    assert (await _post_login(client, "other", "other-password")).status_code == 303


async def test_unknown_name_fails_and_locks_like_a_real_one(client, manager):
    for name in ("manager", "nobody"):
        r = await _post_login(client, name, "wrong-password")
        assert r.status_code == 400
        assert "Wrong user name or password." in r.text
    failure = (await _audit("login.failure", actor_name="nobody"))[0]
    assert failure["actor_id"] is None
    for _ in range(4):
        await _post_login(client, "nobody", "wrong-password")
    r = await _post_login(client, "nobody", "whatever")
    assert r.status_code == 429


async def test_success_starts_the_account_count_afresh(client, manager):
    for _ in range(4):
        await _post_login(client, "manager", "wrong-password")
    assert (await _post_login(client, "manager", PASSWORD)).status_code == 303
    assert await _audit("login.success", actor_id=manager["id"])
    await client.post("/logout", headers={"x-csrftoken": csrf_token(client)})
    assert (await _post_login(client, "manager", "wrong-password")).status_code == 400
    assert (await _post_login(client, "manager", PASSWORD)).status_code == 303


async def test_address_locked_after_failures_with_different_names(
    client, manager, runtime, monkeypatch
):
    _settings(monkeypatch, runtime, login_failures_per_address=4, login_lockout_minutes=30)
    for name in ("ann", "bob", "cat", "dan"):
        assert (await _post_login(client, name, "guess")).status_code == 400
    r = await _post_login(client, "manager", PASSWORD)
    assert r.status_code == 429
    assert "Try again in 30 minutes." in r.text


# --- second factor -------------------------------------------------------------------


async def _enable_totp(client: Any) -> str:
    page = await client.get("/profile/security")
    assert page.status_code == 200
    assert "<svg" in page.text
    secret = _secret(page.text)
    wrong = await post(client, "/profile/security/totp", {"secret": secret, "code": "000000"})
    assert wrong.status_code == 422
    assert field_error(wrong.text, "code")
    r = await post(
        client,
        "/profile/security/totp",
        {"secret": secret, "code": _code(secret)},
        follow_redirects=False,
    )
    assert r.status_code == 303
    return secret


async def test_totp_enrolment_and_login(as_manager, manager):
    client = as_manager
    secret = await _enable_totp(client)
    assert await totp.secret_of(manager["id"]) == secret
    assert await _audit("user.totp_enabled", actor_id=manager["id"])
    await client.post("/logout", headers={"x-csrftoken": csrf_token(client)})
    successes = len(await _audit("login.success"))

    r = await _post_login(client, "manager", PASSWORD)
    assert r.status_code == 303
    assert r.headers["location"] == "/login/totp?next=%2Fclients"
    # the password alone opens nothing
    pending = await client.get("/clients", follow_redirects=False)
    assert pending.status_code in (302, 303, 307)
    assert pending.headers["location"].startswith("/login")
    assert (await client.get("/login/totp")).status_code == 200
    assert len(await _audit("login.success")) == successes

    wrong = await post(client, "/login/totp", {"code": "000000", "next": "/clients"})
    assert wrong.status_code == 400
    assert "Wrong code" in wrong.text
    assert await _audit("login.failure", actor_id=manager["id"])
    code = _code(secret)
    r = await post(
        client, "/login/totp", {"code": code, "next": "/clients"}, follow_redirects=False
    )
    assert r.status_code == 303
    assert r.headers["location"] == "/clients"
    assert (await client.get("/clients")).status_code == 200
    assert len(await _audit("login.success", actor_id=manager["id"])) == successes + 1

    # the same code cannot log in a second time; the next one can
    await client.post("/logout", headers={"x-csrftoken": csrf_token(client)})
    await _post_login(client, "manager", PASSWORD)
    reused = await post(client, "/login/totp", {"code": code}, follow_redirects=False)
    assert reused.status_code == 400
    assert "already used" in reused.text
    r = await post(client, "/login/totp", {"code": _code(secret, 30)}, follow_redirects=False)
    assert r.status_code == 303


async def test_wrong_codes_count_towards_the_lockout(as_manager, manager):
    client = as_manager
    secret = await _enable_totp(client)
    await client.post("/logout", headers={"x-csrftoken": csrf_token(client)})
    await _post_login(client, "manager", PASSWORD)
    for _ in range(5):
        assert (await post(client, "/login/totp", {"code": "000000"})).status_code == 400
    r = await post(client, "/login/totp", {"code": _code(secret)})
    assert r.status_code == 429
    assert "Too many failed attempts" in r.text
    assert (await client.get("/clients", follow_redirects=False)).status_code != 200


async def test_disabling_totp_needs_the_password(as_manager, manager):
    await _enable_totp(as_manager)
    wrong = await post(as_manager, "/profile/security/totp/disable", {"password": "nope"})
    assert wrong.status_code == 422
    assert field_error(wrong.text, "password")
    assert await totp.secret_of(manager["id"])
    r = await post(
        as_manager,
        "/profile/security/totp/disable",
        {"password": PASSWORD},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert await totp.secret_of(manager["id"]) == ""
    assert await _audit("user.totp_disabled", actor_id=manager["id"])


async def test_role_requires_enrolment_before_a_full_session(client, manager):
    await Role.update({Role.totp_required: True}).where(Role.code == "manager")
    r = await _post_login(client, "manager", PASSWORD)
    assert r.status_code == 303
    assert r.headers["location"] == "/login/enroll?next=%2Fclients"
    assert (await client.get("/clients", follow_redirects=False)).status_code != 200
    assert (
        (await client.get("/login/totp", follow_redirects=False))
        .headers["location"]
        .startswith("/login/enroll")
    )
    page = await client.get("/login/enroll")
    assert page.status_code == 200
    assert "<svg" in page.text
    secret = _secret(page.text)
    wrong = await post(client, "/login/enroll", {"secret": secret, "code": "000000"})
    assert wrong.status_code == 400
    r = await post(
        client,
        "/login/enroll",
        {"secret": secret, "code": _code(secret), "next": "/clients"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert r.headers["location"] == "/clients"
    assert (await client.get("/clients")).status_code == 200
    assert await totp.secret_of(manager["id"]) == secret
    # the role's requirement cannot be switched off by the user
    page = await client.get("/profile/security")
    assert "cannot be turned off" in page.text
    r = await post(client, "/profile/security/totp/disable", {"password": PASSWORD})
    assert r.status_code == 422


async def test_enrolment_needs_a_pending_session(client, manager):
    r = await client.get("/login/enroll", follow_redirects=False)
    assert r.headers["location"] == "/login"
    await login(client, "manager", PASSWORD)  # a full session is no pending one either
    r = await post(client, "/login/enroll", {"secret": "A" * 32, "code": "123456"})
    assert r.status_code == 200
    assert "User name" in r.text  # sent back to the login form
    assert await totp.secret_of(manager["id"]) == ""


# --- passwords -----------------------------------------------------------------------


async def test_password_change_ends_other_sessions(as_manager, second_client, manager):
    await login(second_client, "manager", PASSWORD)
    assert (await second_client.get("/clients")).status_code == 200
    page = await as_manager.get("/profile/password")
    assert page.status_code == 200

    def form(current: str, new: str, confirm: str) -> dict[str, str]:
        return {"current": current, "new": new, "confirm": confirm}

    r = await post(as_manager, "/profile/password", form("bad", "new-password-1", "new-password-1"))
    assert r.status_code == 422 and field_error(r.text, "current")
    r = await post(as_manager, "/profile/password", form(PASSWORD, "short", "short"))
    assert r.status_code == 422 and field_error(r.text, "new")
    r = await post(as_manager, "/profile/password", form(PASSWORD, "new-password-1", "other-one"))
    assert r.status_code == 422 and field_error(r.text, "confirm")
    assert (await second_client.get("/clients")).status_code == 200

    r = await post(
        as_manager, "/profile/password", form(PASSWORD, "new-password-1", "new-password-1")
    )
    assert r.status_code == 200
    assert 'id="password-changed"' in r.text
    assert (await as_manager.get("/clients")).status_code == 200
    other = await second_client.get("/clients", follow_redirects=False)
    assert other.headers["location"].startswith("/login")
    assert await _audit("user.password_changed", actor_id=manager["id"])
    assert await users.authenticate("manager", "new-password-1")
    assert await users.authenticate("manager", PASSWORD) is None


async def test_reset_password_forces_a_change(as_manager, second_client, manager):
    await login(second_client, "manager", PASSWORD)
    await users.set_password(manager["id"], "temporary-1", must_change=True)
    for http in (as_manager, second_client):  # every session ended
        r = await http.get("/clients", follow_redirects=False)
        assert r.headers["location"].startswith("/login")

    await login(as_manager, "manager", "temporary-1")
    r = await as_manager.get("/clients", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/profile/password"
    r = await as_manager.get("/clients", headers={"hx-request": "true"}, follow_redirects=False)
    assert r.headers["hx-redirect"] == "/profile/password"
    r = await post(as_manager, "/clients", {"name": "X"}, follow_redirects=False)
    assert r.headers["location"] == "/profile/password"
    assert await Client.count() == 0
    page = await as_manager.get("/profile/password")
    assert page.status_code == 200 and 'id="must-change"' in page.text
    assert (await as_manager.get("/static/kartoteka.css")).status_code == 200

    same = {"current": "temporary-1", "new": "temporary-1", "confirm": "temporary-1"}
    r = await post(as_manager, "/profile/password", same)
    assert r.status_code == 422 and field_error(r.text, "new")
    new = {"current": "temporary-1", "new": "my-own-password", "confirm": "my-own-password"}
    r = await post(as_manager, "/profile/password", new, follow_redirects=False)
    assert r.status_code == 303
    assert (await as_manager.get("/clients")).status_code == 200


async def test_revoke_sessions_and_set_password_service(client, second_client, manager):
    await login(client, "manager", PASSWORD)
    await login(second_client, "manager", PASSWORD)
    assert await users.revoke_sessions(manager["id"]) == 2
    assert await users.revoke_sessions(manager["id"]) == 0
    with pytest.raises(ValidationError):
        await users.set_password(manager["id"], "short", must_change=False)
    await users.set_password(manager["id"], "long-enough", must_change=False)
    await login(client, "manager", "long-enough")
    assert (await client.get("/clients")).status_code == 200


# --- cookies and headers -------------------------------------------------------------


def _cookie(response: Any, name: str) -> str:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(name + "="):
            return header.lower()
    raise AssertionError(f"no {name} cookie in {response.headers}")


async def test_session_cookie_flags(client, manager):
    r = await _post_login(client, "manager", PASSWORD)
    cookie = _cookie(r, "kartoteka_session")
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    assert "secure" not in cookie


async def test_secure_cookies_behind_a_tls_proxy(client, manager, runtime, monkeypatch):
    _settings(monkeypatch, runtime, secure_cookies=True)
    page = await client.get("/login")
    csrf = _cookie(page, "csrftoken")
    assert "secure" in csrf
    # a Secure cookie is not sent back over plain HTTP by the client: send it by hand
    token = csrf.split(";")[0].split("=", 1)[1]
    r = await client.post(
        "/login",
        data={"username": "manager", "password": PASSWORD},
        headers={"x-csrftoken": token, "cookie": f"csrftoken={token}"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    cookie = _cookie(r, "kartoteka_session")
    assert "secure" in cookie and "httponly" in cookie and "samesite=lax" in cookie


async def test_cookies_secure_over_https(app, manager):
    async with AsyncTestClient(app=app, base_url="https://crm.example") as http:
        r = await _post_login(http, "manager", PASSWORD)
        assert r.status_code == 303
        assert "secure" in _cookie(r, "kartoteka_session")


async def test_security_headers(as_manager):
    for path in ("/login", "/clients", "/static/kartoteka.css"):
        r = await as_manager.get(path)
        assert r.status_code == 200
        assert r.headers["content-security-policy"] == CSP.decode()
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "same-origin"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "camera=()" in r.headers["permissions-policy"]
    refused = await as_manager.post("/clients", data={"name": "X"})
    assert refused.status_code == 403
    missing = await as_manager.get("/no/such/page")
    assert missing.status_code == 404
    for r in (refused, missing):
        assert r.headers["content-security-policy"] == CSP.decode()
        assert r.headers["x-frame-options"] == "DENY"


async def test_api_docs_get_a_csp_for_their_cdn(as_manager):
    r = await as_manager.get("/api/schema/swagger")
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    hosts = set(re.findall(r"""(?:src|href)=["'](https?://[^/"']+)""", r.text))
    assert hosts
    for host in hosts:
        assert host in csp
    assert "frame-ancestors 'none'" in csp


async def test_own_pages_have_nothing_inline(client, manager):
    await Role.update({Role.totp_required: True}).where(Role.code == "manager")
    await _post_login(client, "manager", PASSWORD)
    pages = [await client.get("/login"), await client.get("/login/enroll")]
    await User.update({User.totp_secret: pyotp.random_base32()}).where(User.id == manager["id"])
    pages.append(await client.get("/login/totp"))
    for page in pages:
        assert page.status_code == 200
        assert 'style="' not in page.text
        assert "hx-on" not in page.text
        assert not re.search(r"<script(?![^>]*\bsrc=)", page.text)


async def test_profile_pages_have_nothing_inline(as_manager):
    for path in ("/profile/security", "/profile/password"):
        page = await as_manager.get(path)
        assert page.status_code == 200
        assert 'style="' not in page.text
        assert "hx-on" not in page.text
        assert not re.search(r"<script(?![^>]*\bsrc=)", page.text)
        # htmx would otherwise inject an inline <style> for its indicators
        assert '"includeIndicatorStyles": false' in page.text
