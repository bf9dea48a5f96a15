"""The core's own contributions, made through the same hooks as any plugin."""

from __future__ import annotations

from core.hookspecs import hookimpl
from core.hooktypes import MenuItem, Permission, ScheduledJob, TimelineKind
from core.i18n import _


@hookimpl
def menu_items(user: dict) -> list[MenuItem]:
    return [
        MenuItem(label=_("Dashboard"), href="/", order=10),
        MenuItem(label=_("Clients"), href="/clients", order=20),
        MenuItem(label=_("Deals"), href="/deals", order=30),
        MenuItem(label=_("Tasks"), href="/tasks", order=40),
        MenuItem(label=_("Pipelines"), href="/admin/pipelines", order=900, permission="core.admin"),
    ]


@hookimpl
def permissions() -> list[Permission]:
    return [
        Permission("core.admin", _("Administer pipelines, users and settings"), ("admin",)),
        Permission("core.delete_clients", _("Delete clients"), ("admin", "head")),
    ]


@hookimpl(trylast=True)
async def lookup_client(phone: str | None, email: str | None) -> int | None:
    from core.services.clients import lookup

    return await lookup(phone, email)


@hookimpl
def timeline_kinds() -> list[TimelineKind]:
    simple = "core/timeline/simple.html"
    return [
        TimelineKind("note", "core/timeline/note.html", _("Note"), "✎"),
        TimelineKind("client.created", simple, _("Client created"), "★"),
        TimelineKind("client.updated", simple, _("Client details changed"), "✎"),
        TimelineKind("contact.added", simple, _("Contact added"), "👤"),
        TimelineKind("contact.removed", simple, _("Contact removed"), "👤"),
        TimelineKind("deal.created", "core/timeline/deal_created.html", _("Deal created"), "₽"),
        TimelineKind(
            "deal.stage_changed",
            "core/timeline/deal_stage_changed.html",
            _("Deal stage changed"),
            "→",
        ),
        TimelineKind("deal.updated", "core/timeline/deal_changed.html", _("Deal changed"), "✎"),
        TimelineKind("deal.deleted", "core/timeline/deal_changed.html", _("Deal deleted"), "✕"),
        TimelineKind("file.attached", "core/timeline/file_attached.html", _("File attached"), "📎"),
        TimelineKind("file.removed", "core/timeline/file_removed.html", _("File removed"), "📎"),
        TimelineKind("task.created", "core/timeline/task_created.html", _("Task created"), "☐"),
        TimelineKind("task.completed", "core/timeline/task_completed.html", _("Task done"), "☑"),
        TimelineKind("task.reopened", "core/timeline/task_reopened.html", _("Task reopened"), "↺"),
    ]


@hookimpl
def scheduled_jobs() -> list[ScheduledJob]:
    # Imported here: importing an actor module declares actors on the job broker,
    # which must not happen merely because the plugin manager was built.
    from core.jobs.reminders import send_due_reminders

    return [ScheduledJob(name="core.task_reminders", cron="* * * * *", actor=send_due_reminders)]
