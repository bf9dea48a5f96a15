"""Tables of the outgoing side: messages written in the CRM, templates, saved
segments, mass mailings with their recipients, and unsubscribed addresses.

Status lives in rows that are committed one by one, so a crash never loses what was
already sent: a mailing recipient is claimed (``sending``) and then marked ``sent``
in separate commits, and an interrupted claim is never sent again automatically.
Composite unique keys are created by the migration.
"""

from __future__ import annotations

from piccolo.columns import (
    JSON,
    Boolean,
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
from plugins.mail.tables import Mailbox

# OutgoingMessage.status and MailingRecipient.status
QUEUED = "queued"
SENDING = "sending"
SENT = "sent"
FAILED = "failed"
SKIPPED = "skipped"
# Mailing.status
DRAFT = "draft"
RUNNING = "running"
PAUSED = "paused"
DONE = "done"
CANCELLED = "cancelled"


class MailTemplate(Table, tablename="mail_template"):
    """A subject and body with Jinja variables ({{ client.name }}, {{ user.full_name }})."""

    id: Serial

    name = Varchar(length=128)
    subject = Text(default="")
    body = Text(default="")
    created_by = ForeignKey(references=User, on_delete=OnDelete.set_null, null=True)
    updated_at = Timestamptz()


class OutgoingMessage(Table, tablename="mail_outgoing"):
    """One message written in the CRM, from queueing to "sent and in the Sent folder".

    The complete MIME message is built once when queued (``raw_key`` under the data
    dir), so every retry sends the same bytes with the same Message-ID.
    """

    id: Serial

    mailbox = ForeignKey(references=Mailbox, on_delete=OnDelete.cascade, index=True)
    author = ForeignKey(references=User, on_delete=OnDelete.set_null, null=True, index=True)
    client = ForeignKey(references=Client, on_delete=OnDelete.set_null, null=True, index=True)
    message_id = Varchar(length=255, unique=True)
    in_reply_to = Text(default="")
    subject = Text(default="")
    to_addrs = JSON(default="[]")
    cc_addrs = JSON(default="[]")
    body_text = Text(default="")
    attachments = JSON(default="[]")
    raw_key = Varchar(length=128)
    status = Varchar(length=16, default=QUEUED, index=True)
    attempts = Integer(default=0)
    error = Text(default="")
    next_attempt_at = Timestamptz(null=True, default=None)
    claimed_at = Timestamptz(null=True, default=None)
    sent_at = Timestamptz(null=True, default=None)
    sent_copy_saved = Boolean(default=False)
    sent_copy_error = Text(default="")
    created_at = Timestamptz()


class MailSegment(Table, tablename="mail_segment"):
    """A saved client filter: the query of the core client list, stored with a name."""

    id: Serial

    name = Varchar(length=128)
    filters = JSON(default="{}")
    author = ForeignKey(references=User, on_delete=OnDelete.cascade, index=True)
    created_at = Timestamptz()


class Mailing(Table, tablename="mail_mailing"):
    """A mass mailing: a segment resolved as its author sees it, one template, a pace."""

    id: Serial

    name = Varchar(length=128)
    segment = ForeignKey(references=MailSegment, on_delete=OnDelete.set_null, null=True)
    filters = JSON(default="{}")
    mailbox = ForeignKey(references=Mailbox, on_delete=OnDelete.cascade, index=True)
    author = ForeignKey(references=User, on_delete=OnDelete.cascade, index=True)
    subject = Text(default="")
    body = Text(default="")
    per_minute = Integer(default=60)
    base_url = Varchar(length=255, default="")
    status = Varchar(length=16, default=DRAFT, index=True)
    resolved = Boolean(default=False)
    last_error = Text(default="")
    created_at = Timestamptz()
    started_at = Timestamptz(null=True, default=None)
    finished_at = Timestamptz(null=True, default=None)


class MailingRecipient(Table, tablename="mail_mailing_recipient"):
    """One client of a mailing; unique (mailing, client). ``message_id`` is the
    idempotency key of its one message."""

    id: Serial

    mailing = ForeignKey(references=Mailing, on_delete=OnDelete.cascade, index=True)
    client = ForeignKey(references=Client, on_delete=OnDelete.set_null, null=True)
    client_name = Varchar(length=255, default="")
    email = Varchar(length=254, default="")
    status = Varchar(length=16, default=QUEUED, index=True)
    reason = Text(default="")
    message_id = Varchar(length=255, default="")
    attempts = Integer(default=0)
    claimed_at = Timestamptz(null=True, default=None)
    sent_at = Timestamptz(null=True, default=None)


class MailUnsubscribe(Table, tablename="mail_unsubscribe"):
    """An address that asked for no more mailings; checked before every mailing message."""

    id: Serial

    email = Varchar(length=254, unique=True)
    client = ForeignKey(references=Client, on_delete=OnDelete.set_null, null=True)
    mailing = ForeignKey(references=Mailing, on_delete=OnDelete.set_null, null=True)
    created_at = Timestamptz()
