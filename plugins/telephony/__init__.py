from core.manifest import PluginManifest

MANIFEST = PluginManifest(
    name="telephony",
    version="0.1.0",
    summary="Asterisk PBX: screen pop, click-to-call, call log, missed-call tasks",
    hooks="plugins.telephony.hooks",
    core_versions=">=0.1",
)
