"""Kartoteka core. Plugins import what they need from here and from `core.hooktypes`."""

import os

from core.hookspecs import hookimpl
from core.manifest import PluginManifest

__version__ = "0.1.0"

# Piccolo finds its configuration through this variable (its CLI and migrations).
os.environ.setdefault("PICCOLO_CONF", "core.piccolo_conf")

__all__ = ["PluginManifest", "__version__", "hookimpl"]
