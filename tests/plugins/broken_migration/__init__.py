from core.manifest import PluginManifest

MANIFEST = PluginManifest(
    name="broken_migration",
    version="1.0",
    summary="Test plugin whose second migration fails half-way (tests/test_upgrade.py)",
    hooks="tests.plugins.broken_migration.hooks",
)
