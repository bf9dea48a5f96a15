"""Pages of the incoming side, mounted under /p/mail/: mailboxes and their settings,
the client's Mail tab, a message (its sanitised HTML in a sandboxed iframe, its
attachments), and "Unsorted" mail."""

from __future__ import annotations

import json
from typing import Any

from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import File, Template

from core import access
from core.access import needs
from core.default_hooks import CLIENTS_EDIT
from core.i18n import _
from core.services import clients
from core.services.common import NotFound
from core.validation import ValidationError
from core.web.controllers.base import current_user, form_data, redirect, render
from plugins.mail import mailboxes, messages, storage
from plugins.mail.mailboxes import VIEW, MailboxInvalid
from plugins.mail.sanitize import frame_csp, frame_document, sanitize

# --- mailboxes ------------------------------------------------------------------------


def _progress(row: dict[str, Any]) -> dict[str, Any]:
    value = row.get("sync_progress") or {}
    return json.loads(value) if isinstance(value, str) else value


@get("/mailboxes", opt=needs(VIEW), include_in_schema=False)
async def mailbox_list(request: Request) -> Template:
    rows = await mailboxes.list_visible()
    for row in rows:
        row["progress"] = _progress(row)
        row["manageable"] = mailboxes.can_manage(row)
    return render(request, "mail/mailboxes.html", mailboxes=rows)


@get("/mailboxes/{mailbox_id:int}/status", opt=needs(VIEW), include_in_schema=False)
async def mailbox_status(request: Request, mailbox_id: FromPath[int]) -> Template:
    """The sync state of one mailbox: polled by its row while a sync runs."""
    row = await mailboxes.get_readable(mailbox_id)
    row["progress"] = _progress(row)
    row["manageable"] = mailboxes.can_manage(row)
    return render(request, "mail/_mailbox_status.html", m=row)


def _form_page(
    request: Request,
    values: dict[str, Any],
    errors: dict[str, str] | None = None,
    mailbox_id: int | None = None,
    status_code: int = 200,
) -> Template:
    return render(
        request,
        "mail/mailbox_form.html",
        status_code=status_code,
        values=values,
        errors=errors or {},
        mailbox_id=mailbox_id,
        can_share=access.current().can(mailboxes.MANAGE),
    )


def _defaults() -> dict[str, Any]:
    return {
        "kind": "personal",
        "imap_port": 993,
        "imap_security": "ssl",
        "smtp_port": 465,
        "smtp_security": "ssl",
        "sync_enabled": True,
    }


@get("/mailboxes/new", opt=needs(VIEW), include_in_schema=False)
async def mailbox_new(request: Request) -> Template:
    return _form_page(request, _defaults())


@post("/mailboxes", opt=needs(VIEW), status_code=200, include_in_schema=False)
async def mailbox_create(request: Request) -> Response[Any] | Template:
    data = await form_data(request)
    try:
        mailbox_id = await mailboxes.create(data, current_user(request)["id"])
    except MailboxInvalid as exc:
        return _form_page(request, data, exc.errors, status_code=422)
    _queue_sync(mailbox_id)
    return redirect(request, "/p/mail/mailboxes")


@get("/mailboxes/{mailbox_id:int}/edit", opt=needs(VIEW), include_in_schema=False)
async def mailbox_edit(request: Request, mailbox_id: FromPath[int]) -> Template:
    row = await mailboxes.get_manageable(mailbox_id)
    return _form_page(request, row, mailbox_id=mailbox_id)


@post("/mailboxes/{mailbox_id:int}", opt=needs(VIEW), status_code=200, include_in_schema=False)
async def mailbox_update(request: Request, mailbox_id: FromPath[int]) -> Response[Any] | Template:
    data = await form_data(request)
    try:
        await mailboxes.update(mailbox_id, data)
    except MailboxInvalid as exc:
        return _form_page(request, data, exc.errors, mailbox_id=mailbox_id, status_code=422)
    return redirect(request, "/p/mail/mailboxes")


@post(
    "/mailboxes/{mailbox_id:int}/delete", opt=needs(VIEW), status_code=200, include_in_schema=False
)
async def mailbox_delete(request: Request, mailbox_id: FromPath[int]) -> Response[Any]:
    await mailboxes.delete(mailbox_id)
    return redirect(request, "/p/mail/mailboxes")


@post("/mailboxes/test", opt=needs(VIEW), status_code=200, include_in_schema=False)
async def mailbox_test(request: Request) -> Template:
    """Log in to IMAP and SMTP with the form as typed; the result replaces a box on the form."""
    data = await form_data(request)
    existing = None
    if str(data.get("mailbox_id") or "").isdigit():
        existing = await mailboxes.get_manageable(int(data["mailbox_id"]))
    check = await mailboxes.test_connection(data, existing)
    return render(request, "mail/_test_result.html", check=check)


def _queue_sync(mailbox_id: int) -> None:
    from plugins.mail.sync.jobs import sync_mailbox_job

    sync_mailbox_job.send(mailbox_id)


@post("/mailboxes/{mailbox_id:int}/sync", opt=needs(VIEW), status_code=200, include_in_schema=False)
async def mailbox_sync(request: Request, mailbox_id: FromPath[int]) -> Template:
    """Start a sync now (the first one, or after changing the start date) as a job."""
    row = await mailboxes.get_manageable(mailbox_id)
    _queue_sync(mailbox_id)
    row["progress"] = _progress(row)
    row["queued"] = row["manageable"] = True
    return render(request, "mail/_mailbox_status.html", m=row)


# --- the Mail tab and a message -------------------------------------------------------


@get("/clients/{client_id:int}/mail", opt=needs(VIEW), include_in_schema=False)
async def client_mail(request: Request, client_id: FromPath[int]) -> Template:
    threads = await messages.for_client(client_id)
    return render(request, "mail/_client_mail.html", threads=threads, client_id=client_id)


@get("/messages/{message_id:int}", opt=needs(VIEW), include_in_schema=False)
async def message_view(
    request: Request, message_id: FromPath[int], images: FromQuery[int] = 0
) -> Template:
    message = await messages.get_visible(message_id)
    blocked = 0
    if message["html_body"]:
        blocked = sanitize(message["html_body"], message_id).blocked_images
    return render(
        request, "mail/message.html", message=message, blocked=blocked, show_images=bool(images)
    )


@get("/messages/{message_id:int}/body", opt=needs(VIEW), include_in_schema=False)
async def message_body(message_id: FromPath[int], images: FromQuery[int] = 0) -> Response[str]:
    """The sanitised HTML, loaded by the message page's sandboxed iframe.

    Its own CSP (no script, no remote images unless asked) replaces the app's, and
    it may only be framed by our own pages.
    """
    message = await messages.get_visible(message_id)
    safe = sanitize(message["html_body"], message_id, show_images=bool(images))
    return Response(
        frame_document(safe.html),
        media_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": frame_csp(bool(images)),
            "X-Frame-Options": "SAMEORIGIN",
            "Cache-Control": "private, no-store",
        },
    )


def _file(row: dict[str, Any], disposition: str) -> File:
    try:
        path = storage.path_of(row["storage_key"])
    except ValueError:
        raise NotFound(row["id"]) from None
    if not path.is_file():
        raise NotFound(row["id"])
    return File(
        path=path,
        filename=row["filename"],
        media_type=row["content_type"] if disposition == "inline" else "application/octet-stream",
        content_disposition_type=disposition,  # type: ignore[arg-type]
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private"},
    )


@get(
    "/messages/{message_id:int}/attachments/{attachment_id:int}",
    opt=needs(VIEW),
    include_in_schema=False,
)
async def attachment_download(message_id: FromPath[int], attachment_id: FromPath[int]) -> File:
    """Streamed from disk in chunks, so a 20 MB attachment never sits in memory."""
    return _file(await messages.attachment(message_id, attachment_id), "attachment")


@get("/messages/{message_id:int}/cid/{content_id:str}", opt=needs(VIEW), include_in_schema=False)
async def inline_image(message_id: FromPath[int], content_id: FromPath[str]) -> File:
    row = await messages.attachment(message_id, cid=content_id)
    if not row["content_type"].startswith("image/"):
        raise NotFound(content_id)
    return _file(row, "inline")


# --- Unsorted -------------------------------------------------------------------------


@get("/unsorted", opt=needs(VIEW), include_in_schema=False)
async def unsorted_list(request: Request) -> Template:
    return render(request, "mail/unsorted.html", rows=await messages.unsorted())


@get("/unsorted/clients", opt=needs(VIEW), include_in_schema=False)
async def unsorted_client_search(
    request: Request, message: FromQuery[int], address: FromQuery[str], q: FromQuery[str] = ""
) -> Template:
    """Clients (visible to the user) to link an address to, found by name/phone/e-mail."""
    from core.services.clients import ClientQuery

    found: list[dict[str, Any]] = []
    if q.strip():
        found, _cursor = await clients.list_clients(ClientQuery(search=q.strip(), size=10))
    return render(
        request, "mail/_client_choices.html", found=found, message_id=message, address=address, q=q
    )


@post("/unsorted/{message_id:int}/link", opt=needs(VIEW), status_code=200, include_in_schema=False)
async def unsorted_link(request: Request, message_id: FromPath[int]) -> Response[Any]:
    data = await form_data(request)
    try:
        client_id = int(data.get("client") or 0)
    except ValueError:
        client_id = 0
    await messages.link_address(
        message_id, str(data.get("address") or ""), client_id, current_user(request)["id"]
    )
    return redirect(request, "/p/mail/unsorted")


@post(
    "/unsorted/{message_id:int}/create-client",
    opt=needs(CLIENTS_EDIT),
    status_code=200,
    include_in_schema=False,
)
async def unsorted_create_client(request: Request, message_id: FromPath[int]) -> Response[Any]:
    data = await form_data(request)
    try:
        client_id = await messages.create_client_from(
            message_id, str(data.get("address") or ""), current_user(request)["id"]
        )
    except ValidationError as exc:
        return Response(
            _("The client could not be created: %(reason)s", reason=str(exc)),
            status_code=422,
            media_type="text/plain",
        )
    return redirect(request, f"/clients/{client_id}")


ROUTES = [
    mailbox_list,
    mailbox_status,
    mailbox_new,
    mailbox_create,
    mailbox_edit,
    mailbox_update,
    mailbox_delete,
    mailbox_test,
    mailbox_sync,
    client_mail,
    message_view,
    message_body,
    attachment_download,
    inline_image,
    unsorted_list,
    unsorted_client_search,
    unsorted_link,
    unsorted_create_client,
]
