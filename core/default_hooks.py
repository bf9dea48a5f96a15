"""The core's own contributions, made through the same hooks as any plugin."""

from __future__ import annotations

from core.hookspecs import hookimpl
from core.hooktypes import MenuItem, Permission, RecordType, ScheduledJob, TimelineKind
from core.i18n import _


@hookimpl
def menu_items(user: dict) -> list[MenuItem]:
    return [
        MenuItem(label=_("Dashboard"), href="/", order=10),
        MenuItem(label=_("Clients"), href="/clients", order=20),
        MenuItem(label=_("Deals"), href="/deals", order=30),
        MenuItem(label=_("Tasks"), href="/tasks", order=40),
        MenuItem(label=_("Pipelines"), href="/admin/pipelines", order=900, permission=PIPELINES),
        MenuItem(label=_("Users"), href="/admin/users", order=910, permission=USERS),
        MenuItem(label=_("Audit log"), href="/admin/audit", order=920, permission=AUDIT),
        MenuItem(label=_("Backups"), href="/admin/backups", order=930, permission=BACKUPS),
    ]


ALL_ROLES = ("admin", "head", "manager", "readonly")
WRITERS = ("admin", "head", "manager")
CLIENTS_VIEW, CLIENTS_EDIT, CLIENTS_DELETE = (
    "core.clients.view",
    "core.clients.edit",
    "core.clients.delete",
)
DEALS_VIEW, DEALS_EDIT = "core.deals.view", "core.deals.edit"
TASKS_VIEW, TASKS_EDIT = "core.tasks.view", "core.tasks.edit"
EXPORT, PIPELINES, USERS, AUDIT = "core.export", "core.pipelines", "core.users", "core.audit"
BACKUPS = "core.backups"


@hookimpl
def permissions() -> list[Permission]:
    return [
        Permission(CLIENTS_VIEW, _("See clients, their contacts, files and timeline"), ALL_ROLES),
        Permission(CLIENTS_EDIT, _("Create and change clients, contacts, notes, files"), WRITERS),
        Permission(CLIENTS_DELETE, _("Delete clients"), ("admin", "head")),
        Permission(DEALS_VIEW, _("See deals"), ALL_ROLES),
        Permission(DEALS_EDIT, _("Create, change and move deals"), WRITERS),
        Permission(TASKS_VIEW, _("See tasks"), ALL_ROLES),
        Permission(TASKS_EDIT, _("Create, change and complete tasks"), WRITERS),
        Permission(EXPORT, _("Export lists to CSV or Excel"), ("admin", "head")),
        Permission(PIPELINES, _("Set up pipelines and stages"), ("admin",)),
        Permission(USERS, _("Manage users, roles and teams"), ("admin",)),
        Permission(AUDIT, _("View and export the audit log"), ("admin",)),
        Permission(BACKUPS, _("Manage backups and restores"), ("admin",)),
    ]


@hookimpl
def record_types() -> list[RecordType]:
    return [
        RecordType(
            "client",
            _("Clients"),
            hideable_fields=(
                ("client.phones", _("Client phones")),
                ("client.emails", _("Client e-mails")),
                ("client.inn", _("INN and KPP")),
                ("client.address", _("Address")),
            ),
        ),
        RecordType("deal", _("Deals"), hideable_fields=(("deal.amount", _("Deal amounts")),)),
        RecordType("task", _("Tasks")),
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
    from core.backup.jobs import backup_job, check_job
    from core.jobs.reminders import send_due_reminders
    from core.jobs.sessions import clear_expired_sessions
    from core.jobs.statistics import refresh_planner_statistics
    from core.runtime import get_runtime

    jobs = [
        ScheduledJob(name="core.task_reminders", cron="* * * * *", actor=send_due_reminders),
        ScheduledJob(name="core.expired_sessions", cron="17 3 * * *", actor=clear_expired_sessions),
    ]
    settings = get_runtime().settings
    if settings.is_sqlite:
        jobs.append(
            ScheduledJob(
                name="core.planner_statistics", cron="41 3 * * *", actor=refresh_planner_statistics
            )
        )
    if settings.backup_repository:  # the backup actors are declared either way (admin page)
        jobs += [
            ScheduledJob(name="core.backup", cron=settings.backup_schedule, actor=backup_job),
            ScheduledJob(
                name="core.backup_check", cron=settings.backup_check_schedule, actor=check_job
            ),
        ]
    return jobs
