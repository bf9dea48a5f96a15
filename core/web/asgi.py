"""ASGI entry point for uvicorn (`kartoteka run`): ``core.web.asgi:app``."""

from core.runtime import get_runtime
from core.web.app import create_app

_settings = get_runtime().settings
app = create_app(
    get_runtime(),
    run_jobs=_settings.embedded,
    db_pool=not _settings.is_sqlite and not _settings.embedded,
)
