"""The core's tables. Plugins own theirs (prefixed with the plugin name).

Money is stored as integer minor units (kopecks, cents): exact on SQLite and
PostgreSQL alike. Clients, contacts, deals and attachments are soft-deleted
(``deleted_at``) so nothing a manager deletes by mistake is gone for good.
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
    SmallInt,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.columns.base import OnDelete
from piccolo.table import Table


class Role(Table, tablename="core_role"):
    """A role's rules, kept in one row so a request loads them with one query.

    ``permissions``: granted permission codes. ``scopes``: record type -> own/team/all.
    ``hidden_fields``: field codes this role may not see. ``seen``: permission codes
    and record types already offered to this role, so a permission an admin took
    away is not granted again by the plugin's defaults on the next start.
    """

    id: Serial
    code = Varchar(length=32, unique=True)
    name = Varchar(length=100)
    builtin = Boolean(default=False)
    permissions = JSON(default="[]")
    scopes = JSON(default="{}")
    hidden_fields = JSON(default="[]")
    seen = JSON(default="[]")
    totp_required = Boolean(default=False)
    export_max_rows = Integer(null=True, default=None)
    export_daily_rows = Integer(null=True, default=None)
    updated_at = Timestamptz()


class Team(Table, tablename="core_team"):
    """A sales team; users whose role has the "team" scope see their team's records."""

    id: Serial
    name = Varchar(length=128, unique=True)


class User(Table, tablename="core_user"):
    id: Serial
    username = Varchar(length=64, unique=True)
    full_name = Varchar(length=200)
    email = Varchar(length=254, default="")
    password_hash = Varchar(length=255)
    role = Varchar(length=32, default="manager")
    team = ForeignKey(references=Team, on_delete=OnDelete.set_null, null=True, index=True)
    locale = Varchar(length=8, default="")
    active = Boolean(default=True)
    must_change_password = Boolean(default=False)
    totp_secret = Varchar(length=64, default="", secret=True)
    created_at = Timestamptz()


class Session(Table, tablename="core_session"):
    id: Serial
    token_hash = Varchar(length=64, unique=True)
    user = ForeignKey(references=User, on_delete=OnDelete.cascade, index=True)
    created_at = Timestamptz()
    expires_at = Timestamptz()
    mfa_pending = Boolean(default=False)
    """Password accepted, second factor (or its enrolment) still to come."""


class ApiToken(Table, tablename="core_api_token"):
    """Bearer token for the JSON API; only a hash is stored."""

    id: Serial
    user = ForeignKey(references=User, on_delete=OnDelete.cascade, index=True)
    name = Varchar(length=100)
    token_hash = Varchar(length=64, unique=True)
    created_at = Timestamptz()
    last_used_at = Timestamptz(null=True, default=None)


class Client(Table, tablename="core_client"):
    id: Serial
    kind = Varchar(length=16, default="company")
    name = Varchar(length=255)
    name_search = Varchar(length=255)
    legal_name = Varchar(length=255, default="")
    inn = Varchar(length=12, default="", index=True)
    kpp = Varchar(length=9, default="")
    address = Varchar(length=500, default="")
    source = Varchar(length=64, default="", index=True)
    notes = Text(default="")
    responsible = ForeignKey(references=User, on_delete=OnDelete.restrict)
    created_by = ForeignKey(references=User, on_delete=OnDelete.set_null, null=True)
    created_at = Timestamptz()
    updated_at = Timestamptz()
    last_activity_at = Timestamptz()
    deleted_at = Timestamptz(null=True, default=None)


class Contact(Table, tablename="core_contact"):
    id: Serial
    client = ForeignKey(references=Client, on_delete=OnDelete.cascade, index=True)
    name = Varchar(length=255)
    position = Varchar(length=255, default="")
    notes = Text(default="")
    created_at = Timestamptz()
    deleted_at = Timestamptz(null=True, default=None)


class ContactPoint(Table, tablename="core_contact_point"):
    """A phone (E.164) or e-mail (lower-case) of a client or one of its contacts."""

    id: Serial
    client = ForeignKey(references=Client, on_delete=OnDelete.cascade, index=True)
    contact = ForeignKey(references=Contact, on_delete=OnDelete.cascade, null=True)
    kind = Varchar(length=8)
    value = Varchar(length=254)
    position = SmallInt(default=0)


class ClientTag(Table, tablename="core_client_tag"):
    id: Serial
    client = ForeignKey(references=Client, on_delete=OnDelete.cascade, index=True)
    tag = Varchar(length=64)


class Pipeline(Table, tablename="core_pipeline"):
    id: Serial
    name = Varchar(length=128)
    position = SmallInt(default=0)
    archived = Boolean(default=False)


class Stage(Table, tablename="core_stage"):
    id: Serial
    pipeline = ForeignKey(references=Pipeline, on_delete=OnDelete.cascade, index=True)
    name = Varchar(length=128)
    position = SmallInt(default=0)
    outcome = Varchar(length=8, default="open")
    """``open``, or one of the terminal outcomes ``won`` / ``lost``."""


class Deal(Table, tablename="core_deal"):
    id: Serial
    title = Varchar(length=255)
    client = ForeignKey(references=Client, on_delete=OnDelete.restrict, index=True)
    pipeline = ForeignKey(references=Pipeline, on_delete=OnDelete.restrict)
    stage = ForeignKey(references=Stage, on_delete=OnDelete.restrict, index=True)
    amount_minor = BigInt(default=0)
    currency = Varchar(length=3, default="RUB")
    responsible = ForeignKey(references=User, on_delete=OnDelete.restrict, index=True)
    expected_close = Date(null=True, default=None)
    lost_reason = Varchar(length=500, default="")
    closed_at = Timestamptz(null=True, default=None)
    created_at = Timestamptz()
    updated_at = Timestamptz()
    deleted_at = Timestamptz(null=True, default=None)


class DealTotal(Table, tablename="core_deal_total"):
    """How many live deals, and their sum, per stage, responsible and currency; kept by
    core.services.deal_totals so the board does not aggregate every deal."""

    id: Serial
    stage = ForeignKey(references=Stage, on_delete=OnDelete.cascade)
    responsible = ForeignKey(references=User, on_delete=OnDelete.cascade)
    currency = Varchar(length=3)
    deals = Integer(default=0)
    amount_minor = BigInt(default=0)


class Task(Table, tablename="core_task"):
    id: Serial
    title = Varchar(length=255)
    description = Text(default="")
    due_at = Timestamptz()
    assignee = ForeignKey(references=User, on_delete=OnDelete.restrict, index=True)
    client = ForeignKey(references=Client, on_delete=OnDelete.cascade, null=True, index=True)
    deal = ForeignKey(references=Deal, on_delete=OnDelete.cascade, null=True, index=True)
    priority = SmallInt(default=2)
    done_at = Timestamptz(null=True, default=None)
    completed_by = ForeignKey(references=User, on_delete=OnDelete.set_null, null=True)
    reminded_at = Timestamptz(null=True, default=None)
    created_by = ForeignKey(references=User, on_delete=OnDelete.set_null, null=True)
    created_at = Timestamptz()


class TimelineEntry(Table, tablename="core_timeline"):
    """One event on a client's timeline; plugins add their own kinds."""

    id: Serial
    client = ForeignKey(references=Client, on_delete=OnDelete.cascade)
    deal = ForeignKey(references=Deal, on_delete=OnDelete.cascade, null=True, index=True)
    kind = Varchar(length=64)
    occurred_at = Timestamptz()
    author = ForeignKey(references=User, on_delete=OnDelete.set_null, null=True)
    payload = JSON(default="{}")


class Attachment(Table, tablename="core_attachment"):
    id: Serial
    client = ForeignKey(references=Client, on_delete=OnDelete.cascade, index=True)
    deal = ForeignKey(references=Deal, on_delete=OnDelete.cascade, null=True, index=True)
    filename = Varchar(length=255)
    content_type = Varchar(length=128)
    size = BigInt()
    storage_key = Varchar(length=128)
    sha256 = Varchar(length=64)
    uploaded_by = ForeignKey(references=User, on_delete=OnDelete.set_null, null=True)
    created_at = Timestamptz()
    deleted_at = Timestamptz(null=True, default=None)


class AuditEntry(Table, tablename="core_audit"):
    """Append-only: nothing in the UI or API updates or deletes these rows.

    ``actor_id`` is a plain integer, not a foreign key, so no user change can
    cascade into the log. ``changes`` maps a field to ``[before, after]``.
    """

    id: Serial
    occurred_at = Timestamptz()
    actor_id = Integer(null=True, default=None)
    actor_name = Varchar(length=200, default="")
    action = Varchar(length=64)
    object_type = Varchar(length=64, default="")
    object_id = Varchar(length=64, default="")
    summary = Varchar(length=1000, default="")
    changes = JSON(default="{}")
    ip = Varchar(length=45, default="")
    flagged = Boolean(default=False)


class BackupRun(Table, tablename="core_backup_run"):
    """One backup, verification, repository check or restore, with how it ended.

    ``status`` is ``running``, ``ok`` or ``failed``; ``message`` is what an
    administrator reads when it failed (restic's error in plain words).
    """

    id: Serial
    kind = Varchar(length=16)
    status = Varchar(length=16, default="running")
    started_at = Timestamptz()
    finished_at = Timestamptz(null=True, default=None)
    snapshot_id = Varchar(length=64, default="")
    size_bytes = BigInt(default=0)
    message = Text(default="")
    details = JSON(default="{}")


class Notification(Table, tablename="core_notification"):
    id: Serial
    user = ForeignKey(references=User, on_delete=OnDelete.cascade)
    kind = Varchar(length=64)
    text = Varchar(length=500)
    url = Varchar(length=500, default="")
    created_at = Timestamptz()
    read_at = Timestamptz(null=True, default=None)


CORE_TABLES: list[type[Table]] = [
    Role,
    Team,
    User,
    Session,
    ApiToken,
    Client,
    Contact,
    ContactPoint,
    ClientTag,
    Pipeline,
    Stage,
    Deal,
    DealTotal,
    Task,
    TimelineEntry,
    Attachment,
    Notification,
    AuditEntry,
    BackupRun,
]
