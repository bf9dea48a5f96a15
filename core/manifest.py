"""The plugin manifest: what the installer reads before it imports any plugin code."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PluginManifest:
    """Declared in a plugin package's ``__init__.py`` as ``MANIFEST``.

    Keep ``__init__.py`` free of other imports: `kartoteka plugins list` reads every
    installed manifest, including those of disabled plugins.
    """

    name: str
    version: str
    summary: str
    hooks: str
    """Dotted path of the module holding the plugin's ``@hookimpl`` functions."""
    depends: tuple[str, ...] = ()
    """Other plugins that must be enabled (and are loaded) before this one."""
    requires_bin: tuple[str, ...] = ()
    """System binaries that must be on PATH, e.g. ``("restic",)``."""
    core_versions: str = ">=0.1"
    """Core versions the plugin works with (PEP 440 specifier)."""
    description: str = field(default="", compare=False)
