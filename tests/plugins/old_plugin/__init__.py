from core.manifest import PluginManifest

MANIFEST = PluginManifest(
    name="old_plugin",
    version="0.9",
    summary="Test plugin made for an older core (tests/test_upgrade.py)",
    hooks="tests.plugins.old_plugin.hooks",
    core_versions=">=0.0.1,<0.1",
)
