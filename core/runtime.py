"""The running install: its settings and loaded plugins, built once per process."""

from __future__ import annotations

from dataclasses import dataclass

from core.plugins import LoadedPlugins, load_enabled
from core.settings import Settings, get_settings


@dataclass
class Runtime:
    settings: Settings
    plugins: LoadedPlugins


_current: Runtime | None = None


def build_runtime(
    settings: Settings | None = None, extra_plugin_packages: tuple[str, ...] = ()
) -> Runtime:
    settings = settings or get_settings()
    return Runtime(settings=settings, plugins=load_enabled(settings.plugins, extra_plugin_packages))


def set_runtime(runtime: Runtime | None) -> None:
    global _current
    _current = runtime


def get_runtime() -> Runtime:
    global _current
    if _current is None:
        _current = build_runtime()
    return _current
