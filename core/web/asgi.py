"""ASGI entry point for uvicorn (`kartoteka run`): ``core.web.asgi:app``."""

from core.runtime import get_runtime
from core.web.app import create_app

app = create_app(get_runtime(), run_jobs=get_runtime().settings.embedded)
