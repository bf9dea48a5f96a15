"""Outgoing mail: messages, templates, segments, mailings, recipients, unsubscribes."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.base import OnDelete
from piccolo.columns.column_types import (
    JSON,
    Boolean,
    ForeignKey,
    Integer,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.table import Table

ID = "2026-11-23T02:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "outgoing mail and mailings"


class Client(Table, tablename="core_client"):
    pass


class User(Table, tablename="core_user"):
    pass


class Mailbox(Table, tablename="mail_mailbox"):
    pass


class MailSegment(Table, tablename="mail_segment"):
    pass


class Mailing(Table, tablename="mail_mailing"):
    pass


def _fk(table, on_delete, null=True, index=False):
    return (ForeignKey, {"references": table, "on_delete": on_delete, "null": null, "index": index})


def _ts(null=False):
    return (Timestamptz, {"null": null, "default": None} if null else {})


TABLES = {
    ("MailTemplate", "mail_template"): {
        "name": (Varchar, {"length": 128, "default": ""}),
        "subject": (Text, {"default": ""}),
        "body": (Text, {"default": ""}),
        "created_by": _fk(User, OnDelete.set_null),
        "updated_at": _ts(),
    },
    ("OutgoingMessage", "mail_outgoing"): {
        "mailbox": _fk(Mailbox, OnDelete.cascade, index=True),
        "author": _fk(User, OnDelete.set_null, index=True),
        "client": _fk(Client, OnDelete.set_null, index=True),
        "message_id": (Varchar, {"length": 255, "default": "", "unique": True}),
        "in_reply_to": (Text, {"default": ""}),
        "subject": (Text, {"default": ""}),
        "to_addrs": (JSON, {"default": "[]"}),
        "cc_addrs": (JSON, {"default": "[]"}),
        "body_text": (Text, {"default": ""}),
        "attachments": (JSON, {"default": "[]"}),
        "raw_key": (Varchar, {"length": 128, "default": ""}),
        "status": (Varchar, {"length": 16, "default": "queued", "index": True}),
        "attempts": (Integer, {"default": 0}),
        "error": (Text, {"default": ""}),
        "next_attempt_at": _ts(null=True),
        "claimed_at": _ts(null=True),
        "sent_at": _ts(null=True),
        "sent_copy_saved": (Boolean, {"default": False}),
        "sent_copy_error": (Text, {"default": ""}),
        "created_at": _ts(),
    },
    ("MailSegment", "mail_segment"): {
        "name": (Varchar, {"length": 128, "default": ""}),
        "filters": (JSON, {"default": "{}"}),
        "author": _fk(User, OnDelete.cascade, index=True),
        "created_at": _ts(),
    },
    ("Mailing", "mail_mailing"): {
        "name": (Varchar, {"length": 128, "default": ""}),
        "segment": _fk(MailSegment, OnDelete.set_null),
        "filters": (JSON, {"default": "{}"}),
        "mailbox": _fk(Mailbox, OnDelete.cascade, index=True),
        "author": _fk(User, OnDelete.cascade, index=True),
        "subject": (Text, {"default": ""}),
        "body": (Text, {"default": ""}),
        "per_minute": (Integer, {"default": 60}),
        "base_url": (Varchar, {"length": 255, "default": ""}),
        "status": (Varchar, {"length": 16, "default": "draft", "index": True}),
        "resolved": (Boolean, {"default": False}),
        "last_error": (Text, {"default": ""}),
        "created_at": _ts(),
        "started_at": _ts(null=True),
        "finished_at": _ts(null=True),
    },
    ("MailingRecipient", "mail_mailing_recipient"): {
        "mailing": _fk(Mailing, OnDelete.cascade, index=True),
        "client": _fk(Client, OnDelete.set_null),
        "client_name": (Varchar, {"length": 255, "default": ""}),
        "email": (Varchar, {"length": 254, "default": ""}),
        "status": (Varchar, {"length": 16, "default": "queued", "index": True}),
        "reason": (Text, {"default": ""}),
        "message_id": (Varchar, {"length": 255, "default": ""}),
        "attempts": (Integer, {"default": 0}),
        "claimed_at": _ts(null=True),
        "sent_at": _ts(null=True),
    },
    ("MailUnsubscribe", "mail_unsubscribe"): {
        "email": (Varchar, {"length": 254, "default": "", "unique": True}),
        "client": _fk(Client, OnDelete.set_null),
        "mailing": _fk(Mailing, OnDelete.set_null),
        "created_at": _ts(),
    },
}

async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="mail", description=DESCRIPTION)
    for (class_name, tablename), columns in TABLES.items():
        manager.add_table(class_name=class_name, tablename=tablename)
        for name, (column_class, params) in columns.items():
            manager.add_column(
                table_class_name=class_name,
                tablename=tablename,
                column_name=name,
                db_column_name=name,
                column_class_name=column_class.__name__,
                column_class=column_class,
                params=params,
            )
    return manager
