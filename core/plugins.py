"""Finding, resolving and loading plugins.

A plugin is a package exposing ``MANIFEST`` (a `PluginManifest`) and registered under
the ``kartoteka.plugins`` entry-point group, so in-repo plugins and a customer's own
package installed with pip are found the same way.
"""

from __future__ import annotations

import importlib
import inspect
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pluggy
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

import core
from core import default_hooks, hookspecs
from core.manifest import PluginManifest

ENTRY_POINT_GROUP = "kartoteka.plugins"


class PluginError(Exception):
    """A plugin cannot be enabled or loaded; the message says why and what to do."""


@dataclass(frozen=True)
class InstalledPlugin:
    manifest: PluginManifest
    package: str

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def folder(self) -> Path:
        module = importlib.import_module(self.package)
        return Path(module.__file__ or "").parent


def _load_manifest(package: str) -> PluginManifest:
    try:
        module = importlib.import_module(package)
    except Exception as exc:
        raise PluginError(f"plugin package {package!r} cannot be imported: {exc}") from exc
    manifest = getattr(module, "MANIFEST", None)
    if not isinstance(manifest, PluginManifest):
        raise PluginError(f"plugin package {package!r} has no MANIFEST = PluginManifest(...)")
    return manifest


def discover(extra_packages: Iterable[str] = ()) -> dict[str, InstalledPlugin]:
    """Every installed plugin, enabled or not, by name.

    ``extra_packages`` adds packages that are not installed as distributions (tests).
    """
    packages = [ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)]
    packages.extend(extra_packages)
    found: dict[str, InstalledPlugin] = {}
    for package in packages:
        manifest = _load_manifest(package)
        if manifest.name in found and found[manifest.name].package != package:
            raise PluginError(
                f"two packages claim plugin name {manifest.name!r}: "
                f"{found[manifest.name].package} and {package}"
            )
        found[manifest.name] = InstalledPlugin(manifest=manifest, package=package)
    return found


def resolve(
    wanted: Iterable[str], installed: Mapping[str, InstalledPlugin]
) -> list[InstalledPlugin]:
    """The plugins to load, dependencies first; missing ones fail with a clear message."""
    ordered: list[InstalledPlugin] = []
    visiting: list[str] = []

    def visit(name: str, needed_by: str | None) -> None:
        if any(plugin.name == name for plugin in ordered):
            return
        if name in visiting:
            cycle = " -> ".join([*visiting[visiting.index(name) :], name])
            raise PluginError(f"plugin dependency cycle: {cycle}")
        plugin = installed.get(name)
        if plugin is None:
            reason = f" (needed by {needed_by})" if needed_by else ""
            raise PluginError(
                f"plugin {name!r}{reason} is not installed; installed plugins: "
                f"{', '.join(sorted(installed)) or 'none'}"
            )
        visiting.append(name)
        for dependency in plugin.manifest.depends:
            visit(dependency, name)
        visiting.pop()
        ordered.append(plugin)

    for name in wanted:
        visit(name, None)
    return ordered


def missing_binaries(plugin: InstalledPlugin) -> list[str]:
    return [binary for binary in plugin.manifest.requires_bin if shutil.which(binary) is None]


def accepts_core(plugin: InstalledPlugin, core_version: str) -> bool:
    """Does the plugin declare that it works with this core version (PEP 440)?

    Pre-releases count: a development build of the core must not lock every plugin out.
    """
    try:
        specifier = SpecifierSet(plugin.manifest.core_versions)
        return specifier.contains(Version(core_version), prereleases=True)
    except (InvalidSpecifier, InvalidVersion):
        return False  # an unreadable declaration promises nothing


def incompatible_with_core(
    plugins: Iterable[InstalledPlugin], core_version: str | None = None
) -> list[str]:
    """One plain sentence per plugin that does not accept the core version."""
    version = core_version or core.__version__
    return [
        f"plugin {plugin.name} {plugin.manifest.version} works with core versions "
        f"{plugin.manifest.core_versions!r}, not with {version}"
        for plugin in plugins
        if not accepts_core(plugin, version)
    ]


def check_loadable(plugins: Iterable[InstalledPlugin]) -> None:
    plugins = list(plugins)
    incompatible = incompatible_with_core(plugins)
    if incompatible:
        raise PluginError(
            "; ".join(incompatible) + ": use a plugin version made for this core, "
            "or keep the plugin disabled"
        )
    problems = [
        f"{plugin.name} needs {', '.join(missing)} on PATH"
        for plugin in plugins
        if (missing := missing_binaries(plugin))
    ]
    if problems:
        raise PluginError("missing system binaries: " + "; ".join(problems))


@dataclass
class LoadedPlugins:
    """The plugin manager of one app instance plus the plugins it loaded."""

    pm: pluggy.PluginManager
    plugins: list[InstalledPlugin]

    @property
    def names(self) -> list[str]:
        return [plugin.name for plugin in self.plugins]

    def collect(self, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call a list-returning hook and flatten the plugins' lists into one."""
        results = getattr(self.pm.hook, hook_name)(**kwargs)
        flat: list[Any] = []
        for result in results:
            if result is None:
                continue
            if isinstance(result, list | tuple):
                flat.extend(result)
            else:
                flat.append(result)
        return flat

    async def first_result(self, hook_name: str, **kwargs: Any) -> Any:
        """The first non-None result in call order, awaiting async implementations.

        pluggy's own ``firstresult`` cannot be used: an async implementation returns
        a coroutine, which is never None even when it resolves to None.
        """
        results = getattr(self.pm.hook, hook_name)(**kwargs)
        found = None
        for result in results:
            if found is not None:
                if inspect.iscoroutine(result):
                    result.close()
                continue
            value = await result if inspect.isawaitable(result) else result
            if value is not None:
                found = value
        return found


def build_plugin_manager(plugins: Iterable[InstalledPlugin]) -> LoadedPlugins:
    """One manager per app instance (never module-global), core defaults first."""
    pm = pluggy.PluginManager("kartoteka")
    pm.add_hookspecs(hookspecs)
    pm.register(default_hooks, name="core")
    loaded = list(plugins)
    for plugin in loaded:
        try:
            hooks_module = importlib.import_module(plugin.manifest.hooks)
        except Exception as exc:
            raise PluginError(f"plugin {plugin.name}: cannot import hooks: {exc}") from exc
        pm.register(hooks_module, name=plugin.name)
    pm.check_pending()
    return LoadedPlugins(pm=pm, plugins=loaded)


def load_enabled(enabled: Iterable[str], extra_packages: Iterable[str] = ()) -> LoadedPlugins:
    plugins = resolve(enabled, discover(extra_packages))
    check_loadable(plugins)
    return build_plugin_manager(plugins)
