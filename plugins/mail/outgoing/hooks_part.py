"""What the outgoing side contributes to the mail plugin's hooks (plugins/mail/hooks.py
adds these lists to its own)."""

from __future__ import annotations

from typing import Any

from core.hooktypes import CardTab, MenuItem, Permission, ScheduledJob
from core.i18n import lazy_gettext as _l
from plugins.mail.outgoing.routes import MAILINGS, SEND, TEMPLATES


def permissions() -> list[Permission]:
    return [
        Permission(SEND, _l("Write e-mail to clients"), ("admin", "head", "manager")),
        Permission(TEMPLATES, _l("Manage e-mail templates"), ("admin", "head")),
        Permission(MAILINGS, _l("Send mass mailings"), ("admin", "head", "manager")),
    ]


def route_handlers() -> list[Any]:
    from plugins.mail.outgoing.routes import ROUTES

    return ROUTES


def menu_items() -> list[MenuItem]:
    return [
        MenuItem(label=_l("Outbox"), href="/p/mail/outbox", order=62, permission=SEND),
        MenuItem(label=_l("Mailings"), href="/p/mail/mailings", order=63, permission=MAILINGS),
        MenuItem(
            label=_l("E-mail templates"), href="/p/mail/templates", order=64, permission=TEMPLATES
        ),
    ]


def card_tabs(entity: str, record: dict[str, Any]) -> list[CardTab]:
    """A panel with the "Write" button and the messages to this client not yet sent."""
    if entity != "client":
        return []
    return [
        CardTab(
            key="mail-outgoing",
            label=_l("E-mail"),
            url=f"/p/mail/clients/{record['id']}/outgoing",
            placement="panel",
            order=60,
        )
    ]


def scheduled_jobs() -> list[ScheduledJob]:
    from plugins.mail.outgoing.jobs import sweep_outgoing

    return [ScheduledJob(name="mail.outgoing.sweep", cron="* * * * *", actor=sweep_outgoing)]
