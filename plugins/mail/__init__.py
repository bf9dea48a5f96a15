from core.manifest import PluginManifest

MANIFEST = PluginManifest(
    name="mail",
    version="0.1.0",
    summary="IMAP/SMTP mailboxes: the client's correspondence on the card, replies, mailings",
    hooks="plugins.mail.hooks",
    core_versions=">=0.1",
)
