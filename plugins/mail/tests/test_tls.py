"""IMAP over SSL and STARTTLS against the private Dovecot, and a clear error for an
untrusted certificate."""

from __future__ import annotations

from typing import Any

from plugins.mail.tests.dovecot import Dovecot


async def test_ssl_starttls_and_untrusted_certificate(dovecot: Dovecot, monkeypatch: Any) -> None:
    from plugins.mail.mailboxes import test_connection

    login = dovecot.add_user()
    base = {"imap_host": "127.0.0.1", "imap_user": login, "imap_password": dovecot.users[login]}

    untrusted = await test_connection(
        {**base, "imap_port": dovecot.ssl_port, "imap_security": "ssl"}, None
    )
    assert not untrusted.imap_ok and "TLS failed" in untrusted.imap_message
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.imap_message

    monkeypatch.setenv("SSL_CERT_FILE", str(dovecot.root / "cert.pem"))
    over_ssl = await test_connection(
        {**base, "imap_port": dovecot.ssl_port, "imap_security": "ssl"}, None
    )
    assert over_ssl.imap_ok, over_ssl.imap_message
    starttls = await test_connection(
        {**base, "imap_port": dovecot.port, "imap_security": "starttls"}, None
    )
    assert starttls.imap_ok, starttls.imap_message
