"""Jinja set-up: template search path (theme > plugins > default theme > core),
gettext, locale-aware filters, and what every page needs in its context."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, pass_eval_context
from jinja2.nodes import EvalContext
from litestar import Request
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.template.config import TemplateConfig
from markupsafe import Markup

from core import access, i18n
from core.runtime import Runtime
from core.settings import PROJECT_ROOT
from core.validation import format_phone
from core.web.timeline import timeline_entry

CORE_TEMPLATES = Path(__file__).parent / "templates"
CORE_STATIC = Path(__file__).parent / "static"
THEMES_DIR = PROJECT_ROOT / "themes"


def theme_dir(name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() else THEMES_DIR / name


def template_dirs(runtime: Runtime) -> list[Path]:
    dirs: list[Path] = []
    if runtime.settings.theme != "default":
        dirs.append(theme_dir(runtime.settings.theme) / "templates")
    for plugin in runtime.plugins.plugins:
        if (plugin.folder / "templates").is_dir():
            dirs.append(plugin.folder / "templates")
    dirs += [THEMES_DIR / "default" / "templates", CORE_TEMPLATES]
    return dirs


def static_dirs(runtime: Runtime) -> list[Path]:
    dirs: list[Path] = []
    if runtime.settings.theme != "default":
        dirs.append(theme_dir(runtime.settings.theme) / "static")
    return [*dirs, THEMES_DIR / "default" / "static", CORE_STATIC]


@pass_eval_context
def _template_gettext(eval_context: EvalContext, message: str, **variables: Any) -> str:
    """Jinja's newstyle gettext (a trusted translation, escaped variables) without
    formatting a string that has nothing to format: that was a tenth of a card."""
    text = i18n.gettext(message)
    if eval_context.autoescape:
        text = Markup(text)
    return text % variables if variables or "%" in text else text


def _configure(env: Environment, runtime: Runtime) -> None:
    # Templates change only with an upgrade, which restarts the processes: no stat()
    # of every template on every render, except while developing.
    env.auto_reload = runtime.settings.debug
    env.add_extension("jinja2.ext.i18n")
    env.install_gettext_callables(  # type: ignore[attr-defined]
        gettext=i18n.gettext, ngettext=i18n.ngettext, newstyle=True
    )
    env.globals.update(_=_template_gettext, gettext=_template_gettext)
    region = runtime.settings.default_region
    env.filters.update(
        datetime=i18n.format_datetime,
        date=i18n.format_date,
        time=i18n.format_time,
        number=i18n.format_number,
        money=i18n.format_money,
        phone=lambda value: format_phone(value, region),
        options=lambda rows, key, label: [(row[key], row[label]) for row in rows],
    )
    env.globals.update(
        language_names=i18n.LANGUAGE_NAMES,
        languages=runtime.settings.languages,
        current_locale=i18n.current_locale.get,
        # Collected once: core/_phone.html shows those the page's user may use.
        phone_actions=sorted(runtime.plugins.collect("phone_actions"), key=lambda a: a.order),
        timeline_entry=timeline_entry,
    )
    runtime.plugins.pm.hook.jinja_environment(env=env)


def template_config(runtime: Runtime) -> TemplateConfig:
    return TemplateConfig(
        directory=[*template_dirs(runtime)],
        engine=JinjaTemplateEngine,
        engine_callback=lambda engine: _configure(engine.engine, runtime),
    )


_fragments: tuple[Runtime, Environment] | None = None


def render_fragment(template: str, **context: Any) -> str:
    """Render a template outside any request (a live push from the PBX process, say).

    Same search path, filters and plugin globals as pages, but no request: the
    template must not use ``csrf_token()`` or ``url_for``; the caller sets the locale
    (`core.i18n.current_locale`) of the user it renders for.
    """
    global _fragments
    from core.runtime import get_runtime

    runtime = get_runtime()
    if _fragments is None or _fragments[0] is not runtime:
        env = Environment(loader=FileSystemLoader(template_dirs(runtime)), autoescape=True)
        _configure(env, runtime)
        _fragments = (runtime, env)
    return _fragments[1].get_template(template).render(**context)


def page_context(request: Request) -> dict[str, Any]:
    """What every page needs: the user, what they may do and see (``access``), the path."""
    return {
        "user": request.scope.get("user"),
        "access": request.scope.get("access") or access.ANONYMOUS,
        "request_path": request.url.path,
        "request_query": request.url.query,
    }
