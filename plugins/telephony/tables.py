"""Tables of the telephony plugin (all prefixed ``telephony_``)."""

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

from core.tables import Client, Task, User


class TelephonySettings(Table, tablename="telephony_settings"):
    """One row (id 1): how to reach the PBX and how to read its calls."""

    id: Serial
    ami_host = Varchar(length=255, default="")
    ami_port = Integer(default=5038)
    ami_username = Varchar(length=128, default="")
    ami_secret = Text(default="", secret=True)
    """Sealed with core.sealed; never shown back."""
    originate_channel = Varchar(length=128, default="PJSIP/{extension}")
    originate_context = Varchar(length=128, default="from-internal")
    hint_context = Varchar(length=128, default="ext-local")
    external_contexts = Text(default="from-pstn\nfrom-trunk\nfrom-did-direct\next-did")
    trunk_channels = Text(default="")
    """Channel name prefixes of trunks, one a line (``PJSIP/provider-``)."""
    record_internal = Boolean(default=False)
    missed_owner = ForeignKey(references=User, on_delete=OnDelete.set_null, null=True)
    """Who calls back unknown numbers when no extension's user rang."""
    recordings_folder = Varchar(length=500, default="")
    recordings_url = Varchar(length=500, default="")
    webhook_token = Text(default="", secret=True)
    """Sealed bearer token of the cloud-PBX web hook; empty = web hook off."""
    updated_at = Timestamptz()
    status = Varchar(length=32, default="off")
    """off, connecting, connected, error (written by the connection owner)."""
    status_detail = Varchar(length=500, default="")
    status_at = Timestamptz(null=True, default=None)
    pbx_version = Varchar(length=64, default="")


class TelephonyExtension(Table, tablename="telephony_extension"):
    """Which user answers which extension."""

    id: Serial
    extension = Varchar(length=32, unique=True)
    user = ForeignKey(references=User, on_delete=OnDelete.cascade, index=True)


class TelephonyCall(Table, tablename="telephony_call"):
    """One call, however many channels it had: keyed by the PBX's Linkedid."""

    id: Serial
    call_key = Varchar(length=128, unique=True)
    """``ami:<Linkedid>`` or ``hook:<call id>``: replays and reconnects never duplicate."""
    direction = Varchar(length=16)
    external_number = Varchar(length=64, default="", index=True)
    """E.164 when it parses, else as the PBX sent it."""
    did = Varchar(length=64, default="")
    extension = Varchar(length=32, default="")
    user = ForeignKey(references=User, on_delete=OnDelete.set_null, null=True, index=True)
    """Who talked (answered inbound, placed outbound) or, for a missed call, who rang."""
    client = ForeignKey(references=Client, on_delete=OnDelete.set_null, null=True, index=True)
    state = Varchar(length=16, default="ringing")
    result = Varchar(length=16, default="")
    """answered, missed, busy, failed, no_answer, unknown ('' while the call is open)."""
    started_at = Timestamptz(index=True)
    answered_at = Timestamptz(null=True, default=None)
    ended_at = Timestamptz(null=True, default=None)
    talk_seconds = Integer(default=0)
    ringing_users = JSON(default="[]")
    channel_ids = JSON(default="[]")
    """Uniqueids of the call's channels: recordings are named after them."""
    recording = Varchar(length=500, default="")
    timeline_entry = Integer(null=True, default=None)
    callback_task = ForeignKey(references=Task, on_delete=OnDelete.set_null, null=True)


class TelephonyCallback(Table, tablename="telephony_callback"):
    """The one open "call back" task per number: repeated missed calls reuse it."""

    id: Serial
    number = Varchar(length=64, unique=True)
    task = ForeignKey(references=Task, on_delete=OnDelete.cascade, null=True)
    missed_count = Integer(default=1)
    last_missed_at = Timestamptz()
