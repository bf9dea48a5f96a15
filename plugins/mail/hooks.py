"""Hooks of the mail plugin: the incoming side here, the outgoing side's lists added
from plugins/mail/outgoing/hooks_part.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.hookspecs import hookimpl
from core.hooktypes import BackupItem, CardTab, MenuItem, Permission, ScheduledJob, TimelineKind
from core.i18n import _
from plugins.mail.mailboxes import MANAGE, SHARED_ACCESS, VIEW
from plugins.mail.outgoing import hooks_part as outgoing


@hookimpl
def piccolo_apps() -> list[str]:
    return ["plugins.mail.piccolo_app"]


@hookimpl
def route_handlers() -> list[Any]:
    from plugins.mail.routes import ROUTES

    return [*ROUTES, *outgoing.route_handlers()]


@hookimpl
def permissions() -> list[Permission]:
    return [
        Permission(
            VIEW,
            _("See e-mail on client cards, connect an own mailbox"),
            ("admin", "head", "manager"),
        ),
        Permission(MANAGE, _("Manage every mailbox, add shared ones"), ("admin",)),
        Permission(
            SHARED_ACCESS, _("Read shared mailboxes (their unsorted mail)"), ("admin", "head")
        ),
        *outgoing.permissions(),
    ]


@hookimpl
def menu_items(user: Any) -> list[MenuItem]:
    return [
        MenuItem(label=_("Unsorted mail"), href="/p/mail/unsorted", order=60, permission=VIEW),
        MenuItem(label=_("Mailboxes"), href="/p/mail/mailboxes", order=61, permission=VIEW),
        *outgoing.menu_items(),
    ]


@hookimpl
def card_tabs(entity: str, record: dict[str, Any], user: Any) -> list[CardTab]:
    tabs = outgoing.card_tabs(entity, record)
    from core import access

    if entity == "client" and access.current().can(VIEW):
        tabs.append(
            CardTab(
                key="mail", label=_("Mail"), url=f"/p/mail/clients/{record['id']}/mail", order=30
            )
        )
    return tabs


@hookimpl
def timeline_kinds() -> list[TimelineKind]:
    return [TimelineKind("mail.message", "mail/timeline_message.html", _("E-mail"), "✉")]


@hookimpl
def scheduled_jobs() -> list[ScheduledJob]:
    from plugins.mail.sync.jobs import sync_all_mailboxes

    return [
        ScheduledJob(name="mail.sync", cron="* * * * *", actor=sync_all_mailboxes),
        *outgoing.scheduled_jobs(),
    ]


@hookimpl(tryfirst=True)
async def lookup_client(phone: str | None, email: str | None) -> int | None:
    """An address someone linked to a client from "Unsorted" wins over guessing."""
    if not email:
        return None
    from plugins.mail.tables import MailAddressLink

    row = (
        await MailAddressLink.select(MailAddressLink.client)
        .where((MailAddressLink.address == email) & MailAddressLink.client.deleted_at.is_null())
        .first()
    )
    return int(row["client"]) if row else None


@hookimpl
def backup_items() -> list[BackupItem]:
    from plugins.mail.storage import mail_dir

    return [BackupItem(name="mail", path=Path(mail_dir()))]
