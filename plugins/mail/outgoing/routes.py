"""Pages of the outgoing side: compose and reply, the outbox, templates, segments,
mailings, and the public unsubscribe link. Mounted under /p/mail/."""

from __future__ import annotations

import contextlib
from typing import Any

from litestar import Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.params import FromPath, FromQuery
from litestar.response import Template

from core.access import PUBLIC, needs
from core.default_hooks import CLIENTS_VIEW
from core.i18n import _
from core.services import clients, deals
from core.services.common import NotFound, utcnow, write
from core.validation import ValidationError
from core.web.controllers.base import current_user, form_data, is_htmx, redirect, render
from plugins.mail.outgoing import compose, mailings, templates_render, unsubscribe
from plugins.mail.outgoing.tables import FAILED, QUEUED, SENDING, MailTemplate

SEND = "mail.send"
TEMPLATES = "mail.templates.manage"
MAILINGS = "mail.mailings"


# --- compose and reply ----------------------------------------------------------------


async def _reply_fields(message_id: int, client_id: int) -> dict[str, Any]:
    """To, subject, quote and threading headers of a reply to a stored message."""
    original = await compose.message_for_reply(message_id, client_id)
    subject = original["subject"] or ""
    if not subject.lower().startswith(("re:", "re[")):
        subject = "Re: " + subject
    quoted = "\n".join("> " + line for line in (original["text_body"] or "").splitlines())
    header = _(
        "On %(date)s, %(sender)s wrote:",
        date=original["sent_at"].strftime("%Y-%m-%d %H:%M") if original["sent_at"] else "",
        sender=original["from_name"] or original["from_addr"],
    )
    references = [*original.get("references", []), original["message_id"]]
    return {
        "to": original["reply_to"],
        "subject": subject,
        "body": f"\n\n{header}\n{quoted}\n",
        "in_reply_to": original["message_id"],
        "references": " ".join(r for r in references if r),
        "reply_addresses": original["addresses"],
    }


async def _compose_page(
    request: Request,
    client_id: int,
    values: dict[str, Any],
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Template:
    user = current_user(request)
    client = await clients.get_client(client_id)
    addresses = await compose.client_addresses(client_id)
    known = {a for a, _label in addresses}
    addresses += [(a, a) for a in values.get("reply_addresses", []) if a not in known]
    template = "mail/outgoing/_compose.html" if is_htmx(request) else "mail/outgoing/compose.html"
    return render(
        request,
        template,
        status_code=status_code,
        client=client,
        values=values,
        errors=errors or {},
        addresses=addresses,
        mailboxes=await compose.usable_mailboxes(user),
        templates=await MailTemplate.select(MailTemplate.id, MailTemplate.name).order_by(
            MailTemplate.name
        ),
        client_deals=await deals.for_client(client_id),
        variables=templates_render.available_names(),
    )


@get("/clients/{client_id:int}/compose", opt=needs(SEND))
async def compose_form(
    request: Request,
    client_id: FromPath[int],
    reply_to: FromQuery[int | None] = None,
    template: FromQuery[int | None] = None,
    deal: FromQuery[int | None] = None,
) -> Template:
    user = current_user(request)
    await clients.get_client(client_id)
    values: dict[str, Any] = {"deal": deal or ""}
    mailboxes = await compose.usable_mailboxes(user)
    if mailboxes:
        values["mailbox"] = mailboxes[0]["id"]
    addresses = await compose.client_addresses(client_id)
    if addresses:
        values["to"] = addresses[0][0]
    if reply_to is not None:
        values.update(await _reply_fields(reply_to, client_id))
        values["reply_to"] = reply_to
    if template is not None:
        row = await MailTemplate.select().where(MailTemplate.id == template).first()
        if row is None:
            raise NotFound(template)
        values["template"] = template
        if not values.get("subject"):
            values["subject"] = row["subject"]
        values["body"] = row["body"] + values.get("body", "")
    return await _compose_page(request, client_id, values)


async def _uploads(request: Request) -> list[compose.Attachment]:
    form = await request.form()
    found = []
    for upload in form.getall("attachments") if "attachments" in form else []:
        if isinstance(upload, UploadFile) and upload.filename:
            found.append(
                compose.Attachment(
                    filename=upload.filename,
                    content_type=upload.content_type or "application/octet-stream",
                    data=await upload.read(),
                )
            )
            await upload.close()
    return found


async def _compose_data(request: Request) -> dict[str, Any]:
    data = await form_data(request)
    data.pop("attachments", None)
    if isinstance(data.get("to"), str):
        data["to"] = [data["to"]]
    extra = str(data.pop("to_other", "") or "").strip()
    if extra:
        data["to"] = [*data.get("to", []), extra]
        data["allow_other"] = "1"
    return data


async def _reply_allowed(data: dict[str, Any], client_id: int) -> tuple[str, ...]:
    """A reply may go to the addresses of the message it answers."""
    raw = str(data.get("reply_to") or "")
    if not raw.isdigit():
        return ()
    fields = await _reply_fields(int(raw), client_id)
    data["reply_addresses"] = fields["reply_addresses"]
    return tuple(fields["reply_addresses"])


@post("/clients/{client_id:int}/compose/preview", opt=needs(SEND), status_code=200)
async def compose_preview(request: Request, client_id: FromPath[int]) -> Template:
    user = current_user(request)
    data = await _compose_data(request)
    try:
        draft = await compose.validate(
            data, user, client_id, [], await _reply_allowed(data, client_id)
        )
    except ValidationError as exc:
        return render(request, "mail/outgoing/_preview.html", errors=exc.errors, draft=None)
    return render(request, "mail/outgoing/_preview.html", errors={}, draft=draft)


@post("/clients/{client_id:int}/send", opt=needs(SEND), status_code=200)
async def compose_send(request: Request, client_id: FromPath[int]) -> Response[Any]:
    user = current_user(request)
    await clients.get_client(client_id)
    attachments = await _uploads(request)
    data = await _compose_data(request)
    try:
        draft = await compose.validate(
            data, user, client_id, attachments, await _reply_allowed(data, client_id)
        )
    except ValidationError as exc:
        return await _compose_page(request, client_id, data, exc.errors, status_code=422)
    outgoing_id = await compose.queue(draft, user)
    return redirect(request, f"/p/mail/outbox?sent={outgoing_id}")


@get("/clients/{client_id:int}/outgoing", opt=needs(CLIENTS_VIEW))
async def client_outgoing(request: Request, client_id: FromPath[int]) -> Template:
    """Not yet sent messages to this client (queued, failed): part of the Mail tab."""
    rows = await compose.for_client(client_id)
    return render(
        request,
        "mail/outgoing/_client_outgoing.html",
        rows=rows,
        client={"id": client_id},
        pending=any(r["status"] in (QUEUED, SENDING) for r in rows),
    )


# --- outbox ---------------------------------------------------------------------------


@get("/outbox", opt=needs(SEND))
async def outbox_page(request: Request) -> Template:
    rows = await compose.outbox(current_user(request))
    context: dict[str, Any] = {
        "rows": rows,
        "pending": any(r["status"] in (QUEUED, SENDING) for r in rows),
    }
    if is_htmx(request) and request.headers.get("hx-target") == "outbox-rows":
        return render(request, "mail/outgoing/_outbox_rows.html", **context)
    return render(request, "mail/outgoing/outbox.html", **context)


@post("/outbox/{outgoing_id:int}/retry", opt=needs(SEND), status_code=200)
async def outbox_retry(request: Request, outgoing_id: FromPath[int]) -> Response[Any]:
    with contextlib.suppress(ValidationError):  # already queued or sent: the page says so
        await compose.retry(outgoing_id, current_user(request))
    return redirect(request, "/p/mail/outbox")


# --- templates ------------------------------------------------------------------------


def _template_errors(data: dict[str, Any]) -> dict[str, str]:
    errors: dict[str, str] = {}
    if not str(data.get("name") or "").strip():
        errors["name"] = _("This field is required.")
    for name in ("subject", "body"):
        text = str(data.get(name) or "")
        if name == "subject" and not text.strip():
            errors[name] = _("This field is required.")
        elif problem := templates_render.check(text):
            errors[name] = problem
    return errors


@get("/templates", opt=needs(TEMPLATES))
async def template_list(request: Request) -> Template:
    rows = await MailTemplate.select().order_by(MailTemplate.name)
    return render(
        request,
        "mail/outgoing/templates.html",
        rows=rows,
        variables=templates_render.available_names(),
    )


@get("/templates/new", opt=needs(TEMPLATES))
async def template_new(request: Request) -> Template:
    return render(
        request,
        "mail/outgoing/template_form.html",
        values={},
        errors={},
        variables=templates_render.available_names(),
    )


@get("/templates/{template_id:int}/edit", opt=needs(TEMPLATES))
async def template_edit(request: Request, template_id: FromPath[int]) -> Template:
    row = await MailTemplate.select().where(MailTemplate.id == template_id).first()
    if row is None:
        raise NotFound(template_id)
    return render(
        request,
        "mail/outgoing/template_form.html",
        values=row,
        errors={},
        variables=templates_render.available_names(),
    )


async def _save_template(request: Request, template_id: int | None) -> Response[Any]:
    data = await form_data(request)
    errors = _template_errors(data)
    if errors:
        return render(
            request,
            "mail/outgoing/template_form.html",
            status_code=422,
            values={**data, "id": template_id},
            errors=errors,
            variables=templates_render.available_names(),
        )
    values: dict[Any, Any] = {
        MailTemplate.name: str(data["name"]).strip()[:128],
        MailTemplate.subject: str(data.get("subject") or "").strip(),
        MailTemplate.body: str(data.get("body") or ""),
        MailTemplate.updated_at: utcnow(),
    }
    async with write():
        if template_id is None:
            await MailTemplate.insert(
                MailTemplate(
                    **{column._meta.name: value for column, value in values.items()},
                    created_by=current_user(request)["id"],
                )
            )
        else:
            await MailTemplate.update(values).where(MailTemplate.id == template_id)
    return redirect(request, "/p/mail/templates")


@post("/templates", opt=needs(TEMPLATES), status_code=200)
async def template_create(request: Request) -> Response[Any]:
    return await _save_template(request, None)


@post("/templates/{template_id:int}", opt=needs(TEMPLATES), status_code=200)
async def template_update(request: Request, template_id: FromPath[int]) -> Response[Any]:
    if not await MailTemplate.exists().where(MailTemplate.id == template_id):
        raise NotFound(template_id)
    return await _save_template(request, template_id)


@post("/templates/{template_id:int}/delete", opt=needs(TEMPLATES), status_code=200)
async def template_delete(request: Request, template_id: FromPath[int]) -> Response[Any]:
    async with write():
        await MailTemplate.delete().where(MailTemplate.id == template_id)
    return redirect(request, "/p/mail/templates")


# --- segments and mailings ------------------------------------------------------------


@get("/segments/new", opt=needs(MAILINGS))
async def segment_new(request: Request) -> Template:
    """Opened from the client list: its current filters become the segment."""
    filters = mailings.clean_filters(dict(request.query_params))
    return render(
        request,
        "mail/outgoing/segment_form.html",
        values=filters,
        errors={},
        sample=await mailings.sample_clients(filters),
    )


@post("/segments", opt=needs(MAILINGS), status_code=200)
async def segment_create(request: Request) -> Response[Any]:
    data = await form_data(request)
    try:
        await mailings.save_segment(data, current_user(request))
    except ValidationError as exc:
        filters = mailings.clean_filters(data)
        return render(
            request,
            "mail/outgoing/segment_form.html",
            status_code=422,
            values={**filters, "name": data.get("name", "")},
            errors=exc.errors,
            sample=await mailings.sample_clients(filters),
        )
    return redirect(request, "/p/mail/mailings/new")


async def _mailing_form(
    request: Request, values: dict[str, Any], errors: dict[str, str], status_code: int = 200
) -> Template:
    user = current_user(request)
    return render(
        request,
        "mail/outgoing/mailing_form.html",
        status_code=status_code,
        values=values,
        errors=errors,
        segments=await mailings.list_segments(user),
        mailboxes=await compose.usable_mailboxes(user),
        templates=await MailTemplate.select().order_by(MailTemplate.name),
        variables=templates_render.available_names(),
    )


@get("/mailings", opt=needs(MAILINGS))
async def mailing_list(request: Request) -> Template:
    rows = await mailings.list_mailings(current_user(request))
    return render(request, "mail/outgoing/mailings.html", rows=rows)


@get("/mailings/new", opt=needs(MAILINGS))
async def mailing_new(request: Request, template: FromQuery[int | None] = None) -> Template:
    values: dict[str, Any] = {"per_minute": 60}
    if template is not None:
        row = await MailTemplate.select().where(MailTemplate.id == template).first()
        if row:
            values.update(subject=row["subject"], body=row["body"], template=template)
    return await _mailing_form(request, values, {})


@post("/mailings", opt=needs(MAILINGS), status_code=200)
async def mailing_create(request: Request) -> Response[Any]:
    data = await form_data(request)
    try:
        mailing_id = await mailings.create_mailing(
            data, current_user(request), str(request.base_url)
        )
    except ValidationError as exc:
        return await _mailing_form(request, data, exc.errors, status_code=422)
    return redirect(request, f"/p/mail/mailings/{mailing_id}")


async def _mailing_context(mailing_id: int, user: dict[str, Any]) -> dict[str, Any]:
    mailing = await mailings.get_mailing(mailing_id, user)
    return {
        "mailing": mailing,
        "counts": await mailings.counts(mailing_id),
        "failed": await mailings.recipients(mailing_id, FAILED, limit=50),
        "skipped": await mailings.recipients(mailing_id, "skipped", limit=50),
    }


@get("/mailings/{mailing_id:int}", opt=needs(MAILINGS))
async def mailing_page(request: Request, mailing_id: FromPath[int]) -> Template:
    context = await _mailing_context(mailing_id, current_user(request))
    return render(request, "mail/outgoing/mailing.html", **context)


@get("/mailings/{mailing_id:int}/progress", opt=needs(MAILINGS))
async def mailing_progress(request: Request, mailing_id: FromPath[int]) -> Template:
    context = await _mailing_context(mailing_id, current_user(request))
    return render(request, "mail/outgoing/_mailing_progress.html", **context)


@get("/mailings/{mailing_id:int}/preview", opt=needs(MAILINGS))
async def mailing_preview(request: Request, mailing_id: FromPath[int]) -> Template:
    result = await mailings.preview(mailing_id, current_user(request))
    return render(request, "mail/outgoing/_mailing_preview.html", preview=result)


@post("/mailings/{mailing_id:int}/test", opt=needs(MAILINGS), status_code=200)
async def mailing_test(request: Request, mailing_id: FromPath[int]) -> Response[Any]:
    outgoing_id = await mailings.test_send(mailing_id, current_user(request))
    return redirect(request, f"/p/mail/outbox?sent={outgoing_id}")


@post("/mailings/{mailing_id:int}/start", opt=needs(MAILINGS), status_code=200)
async def mailing_start(request: Request, mailing_id: FromPath[int]) -> Response[Any]:
    with contextlib.suppress(ValidationError):  # already running or finished: the page says so
        await mailings.start(mailing_id, current_user(request))
    return redirect(request, f"/p/mail/mailings/{mailing_id}")


@post("/mailings/{mailing_id:int}/pause", opt=needs(MAILINGS), status_code=200)
async def mailing_pause(request: Request, mailing_id: FromPath[int]) -> Response[Any]:
    await mailings.set_status(mailing_id, current_user(request), mailings.PAUSED)
    return redirect(request, f"/p/mail/mailings/{mailing_id}")


@post("/mailings/{mailing_id:int}/cancel", opt=needs(MAILINGS), status_code=200)
async def mailing_cancel(request: Request, mailing_id: FromPath[int]) -> Response[Any]:
    await mailings.set_status(mailing_id, current_user(request), mailings.CANCELLED)
    return redirect(request, f"/p/mail/mailings/{mailing_id}")


# --- unsubscribe (public) -------------------------------------------------------------


@get("/unsubscribe/{token:str}", opt=PUBLIC)
async def unsubscribe_page(request: Request, token: FromPath[str]) -> Template:
    """Asks before acting: mail scanners open links, only a person presses the button."""
    subscription = unsubscribe.read_token(token)
    return render(
        request,
        "mail/outgoing/unsubscribe.html",
        status_code=200 if subscription else 404,
        subscription=subscription,
        token=token,
        done=False,
    )


@post(
    "/unsubscribe/{token:str}",
    opt={**PUBLIC, "exclude_from_csrf": True},  # one-click from mail clients (RFC 8058)
    status_code=200,
)
async def unsubscribe_confirm(request: Request, token: FromPath[str]) -> Template:
    subscription = unsubscribe.read_token(token)
    if subscription is not None:
        await unsubscribe.unsubscribe(subscription)
    return render(
        request,
        "mail/outgoing/unsubscribe.html",
        status_code=200 if subscription else 404,
        subscription=subscription,
        token=token,
        done=subscription is not None,
    )


ROUTES = [
    compose_form,
    compose_preview,
    compose_send,
    client_outgoing,
    outbox_page,
    outbox_retry,
    template_list,
    template_new,
    template_edit,
    template_create,
    template_update,
    template_delete,
    segment_new,
    segment_create,
    mailing_list,
    mailing_new,
    mailing_create,
    mailing_page,
    mailing_progress,
    mailing_preview,
    mailing_test,
    mailing_start,
    mailing_pause,
    mailing_cancel,
    unsubscribe_page,
    unsubscribe_confirm,
]
