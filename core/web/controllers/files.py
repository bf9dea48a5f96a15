"""Client files: upload (streamed), download, remove."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.params import FromPath
from litestar.response import File, Redirect, Template

from core.access import needs
from core.default_hooks import CLIENTS_EDIT, CLIENTS_VIEW
from core.i18n import _
from core.services import attachments, clients
from core.services.common import NotFound
from core.validation import ValidationError
from core.web.controllers.base import current_user, render


def _is_htmx(request: Request) -> bool:
    return bool(request.headers.get("hx-request"))


async def _files_panel(
    request: Request,
    client_id: int,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Template:
    from core.services import deals

    return render(
        request,
        "core/files/_client_files.html",
        status_code=status_code,
        client={"id": client_id},
        sections={
            "files": await attachments.for_client(client_id),
            "deals": await deals.for_client(client_id),
        },
        file_errors=errors or {},
    )


def _deal_id(raw: Any) -> int | None:
    value = str(raw or "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise ValidationError({"deal": _("Choose a deal of this client.")})
    return int(value)


@post(
    "/clients/{client_id:int}/files",
    opt=needs(CLIENTS_EDIT),
    status_code=200,
    include_in_schema=False,
)
async def file_upload(request: Request, client_id: FromPath[int]) -> Response[Any]:
    await clients.get_client(client_id)
    form = await request.form()
    upload = form.get("file")
    errors: dict[str, str] = {}
    try:
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise ValidationError({"file": _("Choose a file to upload.")})
        await attachments.store(
            client_id,
            _deal_id(form.get("deal")),
            upload.filename,
            upload.content_type,
            upload,  # read chunk by chunk by the service
            current_user(request)["id"],
        )
    except ValidationError as exc:
        errors = exc.errors
    finally:
        for value in form.values():
            if isinstance(value, UploadFile):
                await value.close()
    if not errors and not _is_htmx(request):
        return Redirect(f"/clients/{client_id}", status_code=303)
    response = await _files_panel(
        request, client_id, errors=errors, status_code=422 if errors else 200
    )
    if not errors:
        response.headers["HX-Trigger"] = "timeline-changed"
    return response


@get("/files/{attachment_id:int}", opt=needs(CLIENTS_VIEW), include_in_schema=False)
async def file_download(attachment_id: FromPath[int]) -> File:
    row = await attachments.get(attachment_id)
    path = attachments.path_of(row)
    if not path.is_file():
        raise NotFound(attachment_id)
    return File(
        path=path,
        filename=row["filename"],
        media_type=row["content_type"],
        content_disposition_type="attachment",
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private"},
    )


@post(
    "/files/{attachment_id:int}/delete",
    opt=needs(CLIENTS_EDIT),
    status_code=200,
    include_in_schema=False,
)
async def file_delete(request: Request, attachment_id: FromPath[int]) -> Response[Any]:
    client_id = await attachments.delete(attachment_id, current_user(request)["id"])
    if not _is_htmx(request):
        return Redirect(f"/clients/{client_id}", status_code=303)
    response = await _files_panel(request, client_id)
    response.headers["HX-Trigger"] = "timeline-changed"
    return response


HANDLERS = [file_upload, file_download, file_delete]
