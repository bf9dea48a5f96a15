from core.manifest import PluginManifest

MANIFEST = PluginManifest(
    name="sample",
    version="1.0",
    summary="Test plugin implementing every hook",
    hooks="tests.plugins.sample.hooks",
)
