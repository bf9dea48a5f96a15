"""Login (password, then the one-time code if the user has one), logout, the user's
language, password and second factor.

After a right password, a user with a second factor (or whose role requires one
not yet set up) gets a *pending* session: it opens only /login/totp or
/login/enroll, and becomes a full session when the code is right. Every wrong
password or code counts towards the lockout (`core.services.login_guard`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from litestar import Request, Response, get, post
from litestar.params import FromQuery
from litestar.response import Redirect, Template

from core.access import ANY_USER, PUBLIC
from core.i18n import _, ngettext
from core.runtime import get_runtime
from core.services import audit, login_guard, totp, users
from core.services.users import PENDING_LIFETIME, SESSION_LIFETIME
from core.validation import ValidationError
from core.web.auth import SESSION_COOKIE
from core.web.controllers.base import current_user, form_data, redirect, render


def _safe_next(target: str) -> str:
    """Only local paths: a login link must not bounce the user to another site."""
    return target if target.startswith("/") and not target.startswith(("//", "/\\")) else "/"


def _login_step(path: str, target: str) -> str:
    """The next login page, carrying where to go afterwards."""
    return f"{path}?{urlencode({'next': _safe_next(target)})}"


def _address(request: Request) -> str:
    return audit.client_address.get() or (request.client.host if request.client else "")


def _locked_message(minutes: int) -> str:
    return ngettext(
        "Too many failed attempts. Try again in %(num)s minute.",
        "Too many failed attempts. Try again in %(num)s minutes.",
        minutes,
    )


def _with_session(
    request: Request, response: Response[Any], token: str, lifetime: timedelta
) -> Response[Any]:
    secure = request.url.scheme == "https" or get_runtime().settings.secure_cookies
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(lifetime.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=secure,
    )
    return response


def _session_token(request: Request) -> str:
    return request.cookies.get(SESSION_COOKIE, "")


@get("/login", opt=PUBLIC)
async def login_page(request: Request, next: FromQuery[str] = "/") -> Template:
    return render(request, "core/login.html", next=_safe_next(next), error=None, username="")


@post("/login", opt=PUBLIC, status_code=200)
async def login(request: Request) -> Response[Any]:
    data = await form_data(request)
    username, password = str(data.get("username", "")), str(data.get("password", ""))
    target = _safe_next(str(data.get("next", "/")))

    def page(status: int, error: str) -> Template:
        return render(
            request, "core/login.html", status, next=target, username=username, error=error
        )

    wait = await login_guard.wait_minutes(username, _address(request))
    if wait:
        await login_guard.record_blocked(username, await users.by_username(username), wait)
        return page(429, _locked_message(wait))
    found, user = await users.verify_login(username, password)
    if user is None:
        await login_guard.record_failure(username, found, "wrong user name or password")
        return page(400, _("Wrong user name or password."))
    if user["totp_secret"] or await totp.required_for(user["role"]):
        step = _login_step("/login/totp" if user["totp_secret"] else "/login/enroll", target)
        token = await users.start_session(user["id"], pending=True)
        return _with_session(request, Redirect(step, status_code=303), token, PENDING_LIFETIME)
    full = await users.complete_login(user)
    return _with_session(request, Redirect(target, status_code=303), full, SESSION_LIFETIME)


async def _pending(request: Request) -> dict[str, Any] | None:
    token = _session_token(request)
    return await users.pending_user(token) if token else None


@get("/login/totp", opt=PUBLIC)
async def totp_page(request: Request, next: FromQuery[str] = "/") -> Response[Any]:
    user = await _pending(request)
    if user is None:
        return Redirect("/login")
    if not await totp.secret_of(user["id"]):
        return Redirect(_login_step("/login/enroll", next))
    return render(request, "core/login_totp.html", next=_safe_next(next), error=None)


async def _check_code(
    request: Request, user: dict[str, Any], secret: str, code: str
) -> tuple[int | None, str, int]:
    """(time step of a right code, else None; the error to show; its HTTP status)."""
    wait = await login_guard.wait_minutes(user["username"], _address(request))
    if wait:
        await login_guard.record_blocked(user["username"], user, wait)
        return None, _locked_message(wait), 429
    step = totp.matching_step(secret, code)
    if step is None:
        await login_guard.record_failure(user["username"], user, "wrong one-time code")
        return None, _("Wrong code. Check the time on your phone and try again."), 400
    return step, "", 200


@post("/login/totp", opt=PUBLIC, status_code=200)
async def totp_login(request: Request) -> Response[Any]:
    data = await form_data(request)
    target = _safe_next(str(data.get("next", "/")))
    user = await _pending(request)
    if user is None:
        return Redirect("/login", status_code=303)
    secret = await totp.secret_of(user["id"])
    step, error, status = await _check_code(request, user, secret, str(data.get("code", "")))
    if step is not None:
        try:
            token = await users.complete_login(
                user, pending_token=_session_token(request), totp_step=step
            )
        except users.CodeAlreadyUsed:
            await login_guard.record_failure(user["username"], user, "one-time code reused")
            error, status = _("This code was already used. Wait for the next one."), 400
        else:
            response = Redirect(target, status_code=303)
            return _with_session(request, response, token, SESSION_LIFETIME)
    return render(request, "core/login_totp.html", status, next=target, error=error)


def _enrolment(user: dict[str, Any], secret: str) -> dict[str, Any]:
    uri = totp.provisioning_uri(secret, user["username"])
    return {"secret": secret, "qr_svg": totp.qr_svg(uri)}


@get("/login/enroll", opt=PUBLIC)
async def enroll_page(request: Request, next: FromQuery[str] = "/") -> Response[Any]:
    user = await _pending(request)
    if user is None:
        return Redirect("/login")
    if await totp.secret_of(user["id"]):
        return Redirect(_login_step("/login/totp", next))
    return render(
        request,
        "core/login_enroll.html",
        next=_safe_next(next),
        error=None,
        **_enrolment(user, totp.new_secret()),
    )


@post("/login/enroll", opt=PUBLIC, status_code=200)
async def enroll(request: Request) -> Response[Any]:
    data = await form_data(request)
    target = _safe_next(str(data.get("next", "/")))
    user = await _pending(request)
    if user is None or await totp.secret_of(user["id"]):
        return Redirect("/login", status_code=303)
    secret = str(data.get("secret", ""))
    if not totp.valid_secret(secret):
        secret = totp.new_secret()
    step, error, status = await _check_code(request, user, secret, str(data.get("code", "")))
    if step is not None:
        await totp.enable(user, secret)
        try:
            token = await users.complete_login(
                user, pending_token=_session_token(request), totp_step=step
            )
        except users.CodeAlreadyUsed:  # used at an earlier login: the next code will do
            return Redirect(_login_step("/login/totp", target), status_code=303)
        response = Redirect(target, status_code=303)
        return _with_session(request, response, token, SESSION_LIFETIME)
    return render(
        request,
        "core/login_enroll.html",
        status,
        next=target,
        error=error,
        **_enrolment(user, secret),
    )


@post("/logout", opt=ANY_USER, status_code=303)
async def logout(request: Request) -> Response[Any]:
    token = _session_token(request)
    if token:
        await users.end_session(token)
    response = Redirect("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@post("/language", opt=ANY_USER, status_code=200)
async def set_language(request: Request) -> Response[Any]:
    data = await form_data(request)
    await users.set_locale(
        current_user(request)["id"], str(data.get("locale", "")), get_runtime().settings.languages
    )
    if request.headers.get("hx-request"):
        return Response(b"", headers={"HX-Refresh": "true"})
    return Redirect(request.headers.get("referer") or "/", status_code=303)


async def _security_page(
    request: Request, status: int = 200, *, secret: str = "", errors: dict[str, str] | None = None
) -> Template:
    user = current_user(request)
    enabled = bool(await totp.secret_of(user["id"]))
    context: dict[str, Any] = {
        "totp_enabled": enabled,
        "totp_required": await totp.required_for(user["role"]),
        "errors": errors or {},
        "values": {},
    }
    if not enabled:
        context.update(_enrolment(user, secret or totp.new_secret()))
    return render(request, "core/profile_security.html", status, **context)


@get("/profile/security", opt=ANY_USER, include_in_schema=False)
async def security_page(request: Request) -> Template:
    return await _security_page(request)


@post("/profile/security/totp", opt=ANY_USER, status_code=200, include_in_schema=False)
async def totp_enable(request: Request) -> Response[Any]:
    """Turn the second factor on: stored only once a code from the new secret is typed back."""
    data = await form_data(request)
    user = current_user(request)
    secret = str(data.get("secret", ""))
    if not totp.valid_secret(secret) or await totp.secret_of(user["id"]):
        return redirect(request, "/profile/security")
    if totp.matching_step(secret, str(data.get("code", ""))) is None:
        error = _("Wrong code. Check the time on your phone and try again.")
        return await _security_page(request, 422, secret=secret, errors={"code": error})
    await totp.enable(user, secret)
    return redirect(request, "/profile/security")


@post("/profile/security/totp/disable", opt=ANY_USER, status_code=200, include_in_schema=False)
async def totp_disable(request: Request) -> Response[Any]:
    data = await form_data(request)
    user = current_user(request)
    if await totp.required_for(user["role"]):
        error = _("Your role requires a second factor.")
        return await _security_page(request, 422, errors={"password": error})
    wait = await login_guard.wait_minutes(user["username"], _address(request))
    if wait:
        await login_guard.record_blocked(user["username"], user, wait)
        return await _security_page(request, 429, errors={"password": _locked_message(wait)})
    if not await users.check_password(user["id"], str(data.get("password", ""))):
        await login_guard.record_failure(user["username"], user, "wrong password (second factor)")
        error = _("The current password is wrong.")
        return await _security_page(request, 422, errors={"password": error})
    await totp.disable(user)
    return redirect(request, "/profile/security")


@get("/profile/password", opt=ANY_USER, include_in_schema=False)
async def password_page(request: Request) -> Template:
    return render(
        request,
        "core/profile_password.html",
        errors={},
        values={},
        done=False,
        min_length=users.MIN_PASSWORD_LENGTH,
    )


@post("/profile/password", opt=ANY_USER, status_code=200, include_in_schema=False)
async def change_password(request: Request) -> Response[Any]:
    data = await form_data(request)
    user = current_user(request)

    def page(status: int, errors: dict[str, str], done: bool = False) -> Template:
        return render(
            request,
            "core/profile_password.html",
            status,
            errors=errors,
            values={},
            done=done,
            min_length=users.MIN_PASSWORD_LENGTH,
        )

    wait = await login_guard.wait_minutes(user["username"], _address(request))
    if wait:
        await login_guard.record_blocked(user["username"], user, wait)
        return page(429, {"current": _locked_message(wait)})
    try:
        await users.change_password(
            user,
            str(data.get("current", "")),
            str(data.get("new", "")),
            str(data.get("confirm", "")),
            session_token=_session_token(request),
        )
    except ValidationError as exc:
        return page(422, exc.errors)
    if user.get("must_change_password"):
        return redirect(request, "/")
    return page(200, {}, done=True)


HANDLERS = [
    login_page,
    login,
    totp_page,
    totp_login,
    enroll_page,
    enroll,
    logout,
    set_language,
    security_page,
    totp_enable,
    totp_disable,
    password_page,
    change_password,
]
