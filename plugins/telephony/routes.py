"""Pages of the telephony plugin: settings, call journal, card tab, recordings, web hook."""

from __future__ import annotations

import hmac
import json
import secrets
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from litestar import Request, Response, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, FromQuery
from litestar.response import File, Redirect, Template

from core import access
from core.access import PUBLIC, needs
from core.i18n import _
from core.sealed import seal
from core.services.clients import get_client
from core.services.common import NotFound, as_utc, utcnow
from core.services.tasks import install_zone
from core.tables import User
from core.validation import FieldError, Form, integer, text
from core.web.controllers.base import form_data, render
from plugins.telephony import webhook
from plugins.telephony.config import SETTINGS_ID, lines, load_config, settings_row
from plugins.telephony.recordings import recording_source
from plugins.telephony.service import test_connection
from plugins.telephony.tables import TelephonyCall, TelephonyExtension, TelephonySettings

VIEW_CALLS = "telephony.calls.view"
LISTEN = "telephony.recordings.listen"
SETTINGS = "telephony.settings"
PAGE_SIZE = 50
DIRECTIONS = ("inbound", "outbound", "internal")
RESULTS = ("answered", "missed", "busy", "failed", "no_answer", "unknown")


def _columns() -> list[Any]:
    return [
        *TelephonyCall.all_columns(),
        TelephonyCall.user.full_name.as_alias("user_name"),
        TelephonyCall.client.name.as_alias("client_name"),
    ]


def _visible(query: Any) -> Any:
    """Own calls and calls on own clients (the role's scope for ``telephony.call``)."""
    condition = access.current().owner_filter(
        "telephony.call", TelephonyCall.user, TelephonyCall.client.responsible
    )
    return query if condition is None else query.where(condition)


def _prepare(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for row in rows:
        for key in ("started_at", "answered_at", "ended_at"):
            row[key] = as_utc(row[key])
    return rows


def _day(value: str) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


@get("/journal", opt=needs(VIEW_CALLS))
async def journal(
    request: Request,
    direction: FromQuery[str] = "",
    result: FromQuery[str] = "",
    user: FromQuery[int | None] = None,
    number: FromQuery[str] = "",
    since: FromQuery[str] = "",
    until: FromQuery[str] = "",
    before: FromQuery[int | None] = None,
) -> Template:
    query = _visible(TelephonyCall.select(*_columns()))
    if direction in DIRECTIONS:
        query = query.where(TelephonyCall.direction == direction)
    if result in RESULTS:
        query = query.where(TelephonyCall.result == result)
    if user:
        query = query.where(TelephonyCall.user == user)
    digits = "".join(ch for ch in number if ch.isdigit())
    if digits:
        query = query.where(TelephonyCall.external_number.like(f"%{digits[-10:]}%"))
    zone = install_zone()
    first, last = _day(since), _day(until)
    if first:
        query = query.where(TelephonyCall.started_at >= datetime.combine(first, time(0), zone))
    if last:
        end = datetime.combine(last + timedelta(days=1), time(0), zone)
        query = query.where(TelephonyCall.started_at < end)
    if before:
        query = query.where(TelephonyCall.id < before)
    rows = _prepare(await query.order_by(TelephonyCall.id, ascending=False).limit(PAGE_SIZE + 1))
    people = await User.select(User.id, User.full_name).order_by(User.full_name)
    filters = {
        "direction": direction,
        "result": result,
        "user": user or "",
        "number": number,
        "since": since,
        "until": until,
    }
    more = rows[PAGE_SIZE - 1]["id"] if len(rows) > PAGE_SIZE else None
    return render(
        request,
        "telephony/journal.html",
        calls=rows[:PAGE_SIZE],
        more=more,
        filters=filters,
        people=people,
        directions=DIRECTIONS,
        results=RESULTS,
        can_listen=access.current().can(LISTEN),
    )


@get("/clients/{client_id:int}/calls", opt=needs(VIEW_CALLS))
async def client_calls(request: Request, client_id: FromPath[int]) -> Template:
    try:
        await get_client(client_id)  # 404 unless the user may see the client
    except NotFound:
        raise NotFoundException() from None
    query = _visible(TelephonyCall.select(*_columns()).where(TelephonyCall.client == client_id))
    rows = _prepare(await query.order_by(TelephonyCall.started_at, ascending=False).limit(100))
    return render(
        request, "telephony/client_calls.html", calls=rows, can_listen=access.current().can(LISTEN)
    )


@get("/calls/{call_id:int}/recording", opt=needs(LISTEN))
async def recording(call_id: FromPath[int]) -> Any:
    query = _visible(TelephonyCall.select().where(TelephonyCall.id == call_id))
    call = await query.first()
    if call is None:
        raise NotFoundException()
    source = recording_source(await load_config(), call)
    if source is None:
        raise NotFoundException(_("No recording for this call."))
    if isinstance(source, Path):
        return File(path=source, filename=source.name, content_disposition_type="inline")
    return Redirect(source)


# --- settings --------------------------------------------------------------------------


async def _settings_values() -> dict[str, Any]:
    row = await settings_row()
    extensions = await TelephonyExtension.select(
        TelephonyExtension.extension, TelephonyExtension.user.username.as_alias("username")
    ).order_by(TelephonyExtension.extension)
    return {
        **row,
        "ami_secret": "",
        "secret_saved": bool(row["ami_secret"]),
        "webhook_on": bool(row["webhook_token"]),
        "missed_owner": row["missed_owner"] or "",
        "record_internal": "1" if row["record_internal"] else "",
        "extensions": "\n".join(f"{e['extension']} = {e['username']}" for e in extensions),
    }


async def _settings_page(
    request: Request,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    notice: str = "",
    webhook_token: str = "",
    status_code: int = 200,
) -> Template:
    saved = await _settings_values()
    people = await User.select(User.id, User.full_name).where(User.active.eq(True))
    return render(
        request,
        "telephony/settings.html",
        status_code=status_code,
        values=values or saved,
        saved=saved,
        errors=errors or {},
        notice=notice,
        webhook_token=webhook_token,
        people=people,
        webhook_url=str(request.base_url).rstrip("/") + "/p/telephony/webhook",
    )


@get("/settings", opt=needs(SETTINGS))
async def settings_page(request: Request) -> Template:
    return await _settings_page(request)


def _port(value: Any) -> int:
    number = integer(minimum=1)(value)
    if number is None or number > 65535:
        raise FieldError(_("Enter a port between 1 and 65535."))
    return number


def _pattern(placeholder: str) -> Any:
    def check(value: Any) -> str:
        value = text(128, required=True)(value)
        if placeholder not in value:
            raise FieldError(_("Must contain %(p)s.", p=placeholder))
        try:
            value.format(extension="101")
        except (KeyError, IndexError, ValueError):
            raise FieldError(_("Only %(p)s may appear in braces.", p=placeholder)) from None
        return value

    return check


async def _extension_map(raw: Any) -> dict[str, int]:
    """``101 = anna`` lines -> {extension: user id}; unknown users are field errors."""
    wanted: dict[str, str] = {}
    for number, line in enumerate(str(raw or "").splitlines(), start=1):
        if not line.strip():
            continue
        extension, sep, username = (part.strip() for part in line.partition("="))
        if not sep or not extension or not username or len(extension) > 32:
            raise FieldError(_("Line %(n)s: write it as 101 = username.", n=number))
        if extension in wanted:
            raise FieldError(_("Line %(n)s: extension %(ext)s twice.", n=number, ext=extension))
        wanted[extension] = username
    users = {
        row["username"]: row["id"]
        for row in await User.select(User.id, User.username).where(
            User.username.is_in(sorted(set(wanted.values())) or [""])
        )
    }
    unknown = sorted(set(wanted.values()) - set(users))
    if unknown:
        raise FieldError(_("No such user: %(names)s.", names=", ".join(unknown)))
    return {extension: users[username] for extension, username in wanted.items()}


async def _validate_settings(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
    form = Form(data)
    form.field("ami_host", text(255))
    form.field("ami_port", _port, default="5038")
    form.field("ami_username", text(128))
    form.field("ami_secret", text(255))
    form.field("originate_channel", _pattern("{extension}"))
    form.field("originate_context", text(128, required=True))
    form.field("hint_context", text(128, required=True))
    form.field("external_contexts", text(2000))
    form.field("trunk_channels", text(2000))
    form.field("recordings_folder", text(500))
    form.field("recordings_url", text(500))
    owner = form.field("missed_owner", integer(minimum=1, required=False))
    if owner is not None and not await User.exists().where(User.id == owner):
        form.error("missed_owner", _("Choose an active user."))
    folder = form.cleaned.get("recordings_folder")
    if folder and not Path(folder).is_absolute():
        form.error(
            "recordings_folder", _("Enter an absolute path, e.g. /var/spool/asterisk/monitor.")
        )
    url = form.cleaned.get("recordings_url")
    if url and (not url.startswith(("http://", "https://")) or "{" not in url):
        form.error(
            "recordings_url",
            _("Enter an http(s) address with a placeholder such as {file}."),
        )
    extensions: dict[str, int] = {}
    try:
        extensions = await _extension_map(data.get("extensions"))
    except FieldError as exc:
        form.error("extensions", exc.message)
    form.raise_if_invalid()
    cleaned = dict(form.cleaned)
    cleaned["record_internal"] = bool(data.get("record_internal"))
    cleaned["missed_owner"] = owner
    cleaned["external_contexts"] = "\n".join(lines(cleaned["external_contexts"]))
    cleaned["trunk_channels"] = "\n".join(lines(cleaned["trunk_channels"]))
    return cleaned, extensions


@post("/settings", opt=needs(SETTINGS))
async def save_settings(request: Request) -> Template:
    from core.services.common import write
    from core.validation import ValidationError

    data = await form_data(request)
    try:
        cleaned, extensions = await _validate_settings(data)
    except ValidationError as exc:
        return await _settings_page(
            request,
            values={**(await _settings_values()), **data},
            errors=exc.errors,
            status_code=422,
        )
    secret = cleaned.pop("ami_secret")
    values: dict[Any, Any] = {getattr(TelephonySettings, k): v for k, v in cleaned.items()}
    if secret:  # an empty secret field keeps the saved one
        values[TelephonySettings.ami_secret] = seal(secret)
    values[TelephonySettings.updated_at] = utcnow()
    await settings_row()
    async with write():
        await TelephonySettings.update(values).where(TelephonySettings.id == SETTINGS_ID)
        await TelephonyExtension.delete(force=True)
        if extensions:
            await TelephonyExtension.insert(
                *[TelephonyExtension(extension=e, user=u) for e, u in extensions.items()]
            )
    return await _settings_page(request, notice=_("Settings saved."))


@post("/settings/test", opt=needs(SETTINGS))
async def test_settings(request: Request) -> Template:
    """Try the saved settings, or the typed ones (a typed secret replaces the saved one)."""
    import dataclasses

    data = await form_data(request)
    config = await load_config()
    typed: dict[str, Any] = {
        "ami_host": str(data.get("ami_host", config.ami_host)).strip(),
        "ami_username": str(data.get("ami_username", config.ami_username)).strip(),
        "ami_secret": str(data.get("ami_secret") or config.ami_secret),
    }
    try:
        typed["ami_port"] = _port(data.get("ami_port", config.ami_port))
    except FieldError as exc:
        return render(request, "telephony/test_result.html", ok=False, message=exc.message)
    ok, message = await test_connection(dataclasses.replace(config, **typed))
    return render(request, "telephony/test_result.html", ok=ok, message=message)


@get("/settings/status", opt=needs(SETTINGS))
async def connection_status(request: Request) -> Template:
    return render(request, "telephony/status.html", saved=await settings_row())


@post("/settings/webhook-token", opt=needs(SETTINGS))
async def new_webhook_token(request: Request) -> Template:
    """A new web-hook token, shown once; the old one stops working at once."""
    data = await form_data(request)
    token = "" if data.get("disable") else secrets.token_urlsafe(32)
    await settings_row()
    await TelephonySettings.update(
        {
            TelephonySettings.webhook_token: seal(token) if token else "",
            TelephonySettings.updated_at: utcnow(),
        }
    ).where(TelephonySettings.id == SETTINGS_ID)
    notice = _("New web-hook token created.") if token else _("Web hook switched off.")
    return await _settings_page(request, notice=notice, webhook_token=token)


# --- web hook --------------------------------------------------------------------------


@post("/webhook", opt={**PUBLIC, "exclude_from_csrf": True}, status_code=200)
async def call_webhook(request: Request) -> Response[dict[str, Any]]:
    """Call events from a cloud PBX (see docs/telephony.md); Bearer token required.

    Answers JSON whatever the caller's Accept header: a PBX is not a browser.
    """

    def refuse(status: int, detail: str) -> Response[dict[str, Any]]:
        return Response({"ok": False, "detail": detail}, status_code=status)

    config = await load_config()
    sent = request.headers.get("authorization", "")
    expected = f"Bearer {config.webhook_token}"
    if not config.webhook_token or not hmac.compare_digest(sent.encode(), expected.encode()):
        return refuse(401, "missing or wrong bearer token")
    body = await request.body()
    if len(body) > webhook.MAX_BODY:
        return refuse(413, "body too large")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return refuse(400, "body is not JSON")
    try:
        outcome = await webhook.apply(payload)
    except webhook.WebhookError as exc:
        return refuse(422, str(exc))
    return Response({"ok": True, "result": outcome})


HANDLERS = [
    journal,
    client_calls,
    recording,
    settings_page,
    save_settings,
    test_settings,
    connection_status,
    new_webhook_token,
    call_webhook,
]
