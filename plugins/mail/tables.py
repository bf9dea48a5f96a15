"""Tables of the mail plugin: mailboxes, sync cursors, stored messages.

Idempotency lives in the schema, not only in code: a server copy of a message is
unique per (mailbox, folder, UIDVALIDITY, UID) (``MailLocation``) and a message is
unique by the hash of its Message-ID (``MailMessage.message_key``), so a re-sync, a
crash mid-batch or the same mail in two mailboxes can never insert a second row.
The composite unique indexes are created by the plugin's migration.
"""

from __future__ import annotations

from piccolo.columns import (
    JSON,
    BigInt,
    Boolean,
    Date,
    ForeignKey,
    Integer,
    Serial,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.columns.base import OnDelete
from piccolo.table import Table

from core.tables import Client, User

# Mailbox.kind
PERSONAL = "personal"
SHARED = "shared"
# Mailbox.imap_security / smtp_security
SSL = "ssl"
STARTTLS = "starttls"
PLAIN = "none"
# MailFolder.role
INBOX = "inbox"
SENT = "sent"


class Mailbox(Table, tablename="mail_mailbox"):
    """A connected mailbox: personal (one user's own) or shared (e.g. sales@).

    Passwords are stored sealed (core.sealed); the ``*_folder`` fields are empty
    when the folder is detected through SPECIAL-USE at sync time.
    """

    id: Serial
    name = Varchar(length=128)
    email = Varchar(length=254, index=True)
    kind = Varchar(length=16, default=PERSONAL)
    owner = ForeignKey(references=User, on_delete=OnDelete.cascade, null=True, index=True)
    imap_host = Varchar(length=255)
    imap_port = Integer(default=993)
    imap_security = Varchar(length=16, default=SSL)
    imap_user = Varchar(length=254)
    imap_password_sealed = Text(default="", secret=True)
    smtp_host = Varchar(length=255, default="")
    smtp_port = Integer(default=465)
    smtp_security = Varchar(length=16, default=SSL)
    smtp_user = Varchar(length=254, default="")
    smtp_password_sealed = Text(default="", secret=True)
    inbox_folder = Varchar(length=255, default="")
    sent_folder = Varchar(length=255, default="")
    sync_enabled = Boolean(default=True)
    sync_since = Date(null=True, default=None)
    sync_state = Varchar(length=16, default="idle")
    sync_lease_until = Timestamptz(null=True, default=None)
    sync_progress = JSON(default="{}")
    last_sync_at = Timestamptz(null=True, default=None)
    last_error = Text(default="")
    created_by = ForeignKey(references=User, on_delete=OnDelete.set_null, null=True)
    created_at = Timestamptz()


class MailFolder(Table, tablename="mail_folder"):
    """The sync cursor of one synced folder; advanced only after messages commit."""

    id: Serial
    mailbox = ForeignKey(references=Mailbox, on_delete=OnDelete.cascade, index=True)
    role = Varchar(length=16)
    name = Varchar(length=255)
    uidvalidity = BigInt(default=0)
    last_uid = BigInt(default=0)
    synced_at = Timestamptz(null=True, default=None)


class MailMessage(Table, tablename="mail_message"):
    """One e-mail, stored once however many mailboxes/folders hold it."""

    id: Serial
    message_key = Varchar(length=64, unique=True)
    message_id = Text(default="")
    synthetic_id = Boolean(default=False)
    thread_key = Varchar(length=64, index=True)
    in_reply_to = Text(default="")
    references = JSON(default="[]")
    subject = Text(default="")
    from_addr = Varchar(length=254, default="", index=True)
    from_name = Varchar(length=255, default="")
    to_addrs = JSON(default="[]")
    cc_addrs = JSON(default="[]")
    sent_at = Timestamptz(index=True)
    direction = Varchar(length=8, default="in")
    text_body = Text(default="")
    html_body = Text(default="")
    size = BigInt(default=0)
    has_attachments = Boolean(default=False)
    parse_errors = Text(default="")
    matched = Boolean(default=False, index=True)
    created_at = Timestamptz()


class MailLocation(Table, tablename="mail_location"):
    """Where a message sits on a server: unique (mailbox, folder, uidvalidity, uid)."""

    id: Serial
    message = ForeignKey(references=MailMessage, on_delete=OnDelete.cascade, index=True)
    mailbox = ForeignKey(references=Mailbox, on_delete=OnDelete.cascade, index=True)
    folder = ForeignKey(references=MailFolder, on_delete=OnDelete.cascade)
    uidvalidity = BigInt()
    uid = BigInt()


class MailMessageClient(Table, tablename="mail_message_client"):
    """A message shown on a client's card; unique (message, client)."""

    id: Serial
    message = ForeignKey(references=MailMessage, on_delete=OnDelete.cascade, index=True)
    client = ForeignKey(references=Client, on_delete=OnDelete.cascade, index=True)


class MailAttachment(Table, tablename="mail_attachment"):
    """An attachment stored as a file under the plugin's data folder."""

    id: Serial
    message = ForeignKey(references=MailMessage, on_delete=OnDelete.cascade, index=True)
    filename = Varchar(length=255)
    content_type = Varchar(length=128)
    size = BigInt()
    content_id = Varchar(length=255, default="")
    storage_key = Varchar(length=128)
    sha256 = Varchar(length=64)


class MailAddressLink(Table, tablename="mail_address_link"):
    """An address linked to a client by hand from "Unsorted", used for later mail."""

    id: Serial
    address = Varchar(length=254, unique=True)
    client = ForeignKey(references=Client, on_delete=OnDelete.cascade, index=True)
    created_by = ForeignKey(references=User, on_delete=OnDelete.set_null, null=True)
    created_at = Timestamptz()
