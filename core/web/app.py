"""The web application: assembled once from the core and the enabled plugins."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Litestar, Request, Response, Router
from litestar.config.csrf import CSRFConfig
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
)
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.plugins.htmx import HTMXPlugin
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from core import __version__, events, i18n, live, maintenance
from core.access import ANY_USER
from core.db import (
    ReusingSQLiteEngine,
    bind_tables,
    get_engine,
    refresh_statistics,
    start_pool,
)
from core.runtime import Runtime, get_runtime, set_runtime
from core.services.common import NotFound
from core.validation import ValidationError
from core.web import controllers
from core.web.auth import auth_middleware, require_access
from core.web.maintenance import maintenance_middleware
from core.web.security import add_security_headers, password_change_middleware
from core.web.templating import page_context, static_dirs, template_config
from core.web.timing import server_timing_middleware

log = logging.getLogger(__name__)


def _wants_json(request: Request) -> bool:
    return (
        request.url.path.startswith("/api/")
        or "application/json" in request.headers.get("accept", "").split(",")[0]
    )


def _error_page(request: Request, status: int, title: str, detail: str = "") -> Response[Any]:
    if _wants_json(request):
        return Response({"status_code": status, "detail": detail or title}, status_code=status)
    return Template(
        "core/error.html",
        context={**page_context(request), "status": status, "title": title, "detail": detail},
        status_code=status,
    )


def _not_found(request: Request, exc: Exception) -> Response[Any]:
    return _error_page(
        request,
        404,
        i18n.gettext("Not found"),
        i18n.gettext("This page does not exist or the record was deleted."),
    )


def _not_authorized(request: Request, exc: Exception) -> Response[Any]:
    if _wants_json(request):
        return Response({"status_code": 401, "detail": "authentication required"}, status_code=401)
    target = "/login?next=" + request.url.path
    if request.headers.get("hx-request"):
        return Response(b"", status_code=200, headers={"HX-Redirect": target})
    return Redirect(target)


def _forbidden(request: Request, exc: Exception) -> Response[Any]:
    return _error_page(request, 403, i18n.gettext("Not allowed"), str(getattr(exc, "detail", "")))


def _invalid(request: Request, exc: ValidationError) -> Response[Any]:
    """Validation errors that reach here (API, or a form without its own handling)."""
    if _wants_json(request):
        return Response(
            {"status_code": 422, "detail": "invalid input", "errors": exc.errors}, status_code=422
        )
    return _error_page(request, 422, i18n.gettext("Invalid input"), "; ".join(exc.errors.values()))


def _http_error(request: Request, exc: HTTPException) -> Response[Any]:
    if _wants_json(request):
        extra = exc.extra if isinstance(exc.extra, dict | list) else None
        body: dict[str, Any] = {"status_code": exc.status_code, "detail": exc.detail}
        if extra:
            body["extra"] = extra
        return Response(body, status_code=exc.status_code)
    return _error_page(request, exc.status_code, str(exc.detail))


def _server_error(request: Request, exc: Exception) -> Response[Any]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _error_page(
        request,
        HTTP_500_INTERNAL_SERVER_ERROR,
        i18n.gettext("Something went wrong"),
        i18n.gettext("The error was logged. Nothing you entered was half-saved."),
    )


def _plugin_routers(runtime: Runtime) -> list[Router]:
    routers = []
    for plugin in runtime.plugins.plugins:
        impl = runtime.plugins.pm.get_plugin(plugin.name)
        hook = getattr(impl, "route_handlers", None)
        handlers = hook() if hook else None
        if handlers:
            routers.append(Router(path=f"/p/{plugin.name}", route_handlers=list(handlers)))
    return routers


async def _offer_new_permissions() -> None:
    """A plugin enabled since the last start brings permissions its default roles get."""
    from core.services.roles import sync_roles

    try:
        await sync_roles()
    except Exception:  # another process syncing at the same moment; its result is ours
        log.warning("role sync skipped", exc_info=True)


def create_app(
    runtime: Runtime | None = None, run_jobs: bool = False, db_pool: bool = False
) -> Litestar:
    """``run_jobs``: embedded mode, the job worker and scheduler live in this process.

    ``db_pool``: a PostgreSQL connection pool bound to the server's event loop; off
    where other loops use the database too (in-process jobs, test clients).
    """
    runtime = runtime or get_runtime()
    set_runtime(runtime)
    settings = runtime.settings
    plugin_routers = _plugin_routers(runtime)
    locale_dirs = [p.folder / "locale" for p in runtime.plugins.plugins]

    def dispatch(event: events.DomainEvent) -> None:
        runtime.plugins.pm.hook.domain_event(event=event)

    background: list[Any] = []
    long_lived: list[Any] = []

    async def on_startup() -> None:
        bind_tables()
        i18n.load_catalogs(settings.languages, locale_dirs)
        events.set_dispatcher(dispatch)
        live.end_streams_on_exit()
        if maintenance.current():
            # A failed upgrade left the database at an older schema: serve the 503 page
            # with the reason, and start nothing that would touch the data.
            return
        await _offer_new_permissions()
        await refresh_statistics(only_if_missing=True)
        if db_pool:
            await start_pool()
        if run_jobs:
            from core.jobs.broker import setup_broker
            from core.jobs.scheduler import EmbeddedScheduler
            from core.jobs.worker import EmbeddedWorker, load_actors

            setup_broker(settings)
            load_actors(runtime)
            background.extend([EmbeddedWorker(), EmbeddedScheduler(runtime)])
            for service in background:
                service.start()
            # This process owns the schedule, so it also owns the long-lived connections.
            from core.jobs.services import BackgroundServices

            long_lived.append(BackgroundServices(runtime))
            long_lived[0].start()

    async def on_shutdown() -> None:
        for services in long_lived:
            await services.stop()
        long_lived.clear()
        for service in reversed(background):
            service.stop()
        background.clear()
        events.set_dispatcher(None)
        await live.close()
        if db_pool:
            await get_engine().close_connection_pool()  # type: ignore[attr-defined]
        engine = get_engine()
        if isinstance(engine, ReusingSQLiteEngine):
            await engine.close_shared_connections()

    return Litestar(
        route_handlers=[
            *controllers.all_handlers(),
            *plugin_routers,
            create_static_files_router(
                path="/static", directories=[*static_dirs(runtime)], opt={"public": True}
            ),
        ],
        guards=[require_access],
        middleware=[
            server_timing_middleware,
            maintenance_middleware,
            auth_middleware,
            password_change_middleware,
        ],
        before_send=[add_security_headers],
        plugins=[HTMXPlugin()],
        template_config=template_config(runtime),
        csrf_config=CSRFConfig(
            secret=settings.secret_key,
            cookie_name="csrftoken",
            header_name="x-csrftoken",
            cookie_samesite="lax",
            cookie_httponly=False,
            # The API changes data only with bearer tokens (never cookies), so CSRF
            # cannot apply; web hooks opt out with opt={"exclude_from_csrf": True}.
            exclude=["^/api/"],
        ),
        openapi_config=OpenAPIConfig(
            title="Kartoteka API",
            version=__version__,
            path="/api/schema",
            render_plugins=[SwaggerRenderPlugin()],
            # The schema is documentation for API users: any logged-in user may read it.
            openapi_router=Router(path="/api/schema", route_handlers=[], opt=dict(ANY_USER)),
        ),
        exception_handlers={
            NotFound: _not_found,
            NotFoundException: _not_found,
            NotAuthorizedException: _not_authorized,
            PermissionDeniedException: _forbidden,
            ValidationError: _invalid,
            HTTPException: _http_error,
            Exception: _server_error,
        },
        request_max_body_size=settings.max_upload_bytes + 1024 * 1024,
        on_startup=[on_startup],
        on_shutdown=[on_shutdown],
        debug=settings.debug,
    )
