"""The plugin contract: every hook a Kartoteka plugin can implement.

Each docstring is the reference documentation of its hook (``docs/plugins.md`` is
checked against this file). Hooks are called with keyword arguments; an
implementation may accept any subset of them. Unless a hook says otherwise, results
of all plugins are collected into a list, and an implementation may return ``None``
to contribute nothing.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("kartoteka")
hookimpl = pluggy.HookimplMarker("kartoteka")


@hookspec
def piccolo_apps() -> list[str]:
    """Piccolo apps (tables and migrations) the plugin contributes.

    Returns:
        Dotted module paths of ``piccolo_app.py`` modules, each exposing
        ``APP_CONFIG``. Their migrations run when the plugin is enabled and on every
        ``kartoteka migrate``. Declare ``migration_dependencies=["core.piccolo_app"]``
        and prefix table names with the plugin name.

    Example::

        @hookimpl
        def piccolo_apps():
            return ["plugins.warehouse.piccolo_app"]
    """


@hookspec
def route_handlers() -> list[Any]:
    """Web routes of the plugin.

    Returns:
        Litestar route handlers or controllers. The core mounts them under
        ``/p/<plugin name>/``, behind login and CSRF protection. Every handler says who
        may call it in ``opt``: ``needs("telephony.view_calls")`` (a permission),
        ``ANY_USER`` (any logged-in user) or ``PUBLIC`` (from ``core.access``); a
        handler that says nothing is refused to everyone. A handler that must be
        reachable without a session (a PBX web hook) sets
        ``opt={**PUBLIC, "exclude_from_csrf": True}`` and authenticates the caller itself.

    Example::

        @get("/journal", opt=needs("telephony.view_calls"))
        async def journal(request: Request) -> Template:
            return Template("telephony/journal.html", context={...})

        @hookimpl
        def route_handlers():
            return [journal]   # served at /p/telephony/journal
    """


@hookspec
def menu_items(user: Any) -> list[Any]:
    """Entries for the main navigation.

    Args:
        user: the logged-in ``User`` row (``user.id``, ``user.role``, ``user.locale``).

    Returns:
        ``core.hooktypes.MenuItem`` objects; items with a ``permission`` the user lacks
        are hidden by the core.

    Example::

        @hookimpl
        def menu_items(user):
            return [MenuItem(label=_("Calls"), href="/p/telephony/journal", order=40)]
    """


@hookspec
def card_tabs(entity: str, record: dict[str, Any], user: Any) -> list[Any]:
    """Tabs and side panels on a client or deal card.

    Args:
        entity: ``"client"`` or ``"deal"``.
        record: the card's row as a dict (``record["id"]``, ``record["name"]``...).
        user: the logged-in user.

    Returns:
        ``core.hooktypes.CardTab`` objects. Their ``url`` is fetched with htmx only when
        the tab is opened (panels load with the card), so a slow plugin never slows
        the card down.

    Example::

        @hookimpl
        def card_tabs(entity, record):
            if entity == "client":
                return [CardTab(key="calls", label=_("Calls"),
                                url=f"/p/telephony/clients/{record['id']}/calls")]
    """


@hookspec
def timeline_kinds() -> list[Any]:
    """Renderers for timeline entries the plugin writes.

    Returns:
        ``core.hooktypes.TimelineKind`` objects mapping an entry ``kind`` (e.g.
        ``"telephony.call"``) to a Jinja template. The template gets ``entry`` with
        ``kind``, ``occurred_at``, ``author_name``, ``deal`` and the JSON ``payload``
        the plugin stored through ``core.services.timeline.add_entry``, and
        ``timeline_templates`` (kind to `TimelineKind`); nothing of the page. An entry
        never changes, so its HTML is rendered once per language and time zone and
        reused: the template must depend on the entry alone. Each process calls the
        hook once per language: return the same list every time.

    Example::

        @hookimpl
        def timeline_kinds():
            return [TimelineKind(kind="telephony.call", icon="☎",
                                 template="telephony/timeline_call.html")]
    """


@hookspec
def domain_event(event: Any) -> None:
    """React to something that happened in the core, after its transaction committed.

    Args:
        event: a ``core.events.DomainEvent`` subclass instance; ``event.name`` is one
            of ``client.created``, ``client.updated``, ``client.deleted``,
            ``deal.created``, ``deal.stage_changed``, ``deal.won``, ``deal.lost``,
            ``task.created``, ``task.completed``, ``task.due``, ``security.alert``
            (a user viewed or exported more client cards in an hour than allowed:
            ``user_id``, ``views``, ``exported_rows``).

    Runs inside the request or job that caused the event: enqueue a Dramatiq actor
    for anything slow. An exception is logged and does not affect other plugins.

    Example::

        @hookimpl
        def domain_event(event):
            if event.name == "deal.won":
                recalculate_plan.send(deal_id=event.deal_id)
    """


@hookspec
def scheduled_jobs() -> list[Any]:
    """Periodic jobs, driven by the one scheduler of the install.

    Returns:
        ``core.hooktypes.ScheduledJob`` objects; at each cron tick the scheduler
        sends the actor a message, so the work runs on a job worker.

    Example::

        @hookimpl
        def scheduled_jobs():
            return [ScheduledJob(name="mail.sync", cron="* * * * *", actor=sync_all)]
    """


@hookspec
def permissions() -> list[Any]:
    """Permissions the plugin introduces.

    Returns:
        ``core.hooktypes.Permission`` objects with a code prefixed by the plugin name,
        a label, and the default roles that get it (``admin``, ``head``, ``manager``,
        ``readonly``). A new permission is granted once to its default roles; after
        that the administrator's choice on the roles page stands. Routes require one
        with ``opt=core.access.needs("telephony.listen_recordings")``.

    Example::

        @hookimpl
        def permissions():
            return [Permission("telephony.listen_recordings",
                               _("Listen to call recordings"), ("admin", "head"))]
    """


@hookspec
def record_types() -> list[Any]:
    """Kinds of records whose visibility each role limits (own, team or all).

    The scope itself reaches a plugin through ``core.access.current()``: filter
    a query with ``current().owner_filter("telephony.call", Call.user)`` and check
    one record with ``current().sees_owner(...)``, so the rules are the core's.

    Returns:
        ``core.hooktypes.RecordType`` objects: a code prefixed by the plugin name, a
        label, the fields an admin may hide from a role, and optional default scopes.

    Example::

        @hookimpl
        def record_types():
            return [RecordType("telephony.call", _("Calls"),
                               hideable_fields=(("telephony.call.recording", _("Recordings")),))]
    """


@hookspec
def dashboard_widgets(user: Any) -> list[Any]:
    """Tiles on the dashboard.

    Args:
        user: the logged-in user.

    Returns:
        ``core.hooktypes.DashboardWidget`` objects; each ``url`` is loaded with htmx
        after the dashboard renders.

    Example::

        @hookimpl
        def dashboard_widgets(user):
            return [DashboardWidget(key="missed", title=_("Missed calls"),
                                    url="/p/telephony/widgets/missed")]
    """


@hookspec
def kpi_metrics() -> list[Any]:
    """Metrics the KPI module can plan and measure.

    Returns:
        ``core.hooktypes.KpiMetric`` objects whose ``compute(start, end, scope)`` is an
        async function returning the fact for that period and users.

    Example::

        @hookimpl
        def kpi_metrics():
            return [KpiMetric(key="calls.outbound", label=_("Calls made"),
                              unit="calls", compute=count_outbound_calls)]
    """


@hookspec
def lookup_client(phone: str | None, email: str | None) -> int | None:
    """Find the client a phone number or e-mail address belongs to.

    Args:
        phone: a number in any format (normalised by the core before the call) or None.
        email: an address (lower-cased by the core) or None.

    Returns:
        The client id (or an awaitable of it), or None to let the next implementation
        try. The first non-None result wins. The core's own implementation (client and
        contact phones and e-mails; for an e-mail with no exact match, the one client
        with addresses at the same corporate domain, never a free mail domain such as
        gmail.com or mail.ru: ``core.services.clients.FREE_MAIL_DOMAINS``) is
        ``trylast``, so a plugin can override matching.
        Callers use ``core.services.clients.find_client`` rather than the raw hook.

    Example::

        @hookimpl(tryfirst=True)
        def lookup_client(phone):
            return PBX_SHORTCUTS.get(phone)   # an own mapping wins over the core's

        client_id = await find_client(phone="8 912 345-67-89")   # -> 42
    """


@hookspec
def data_formats() -> list[Any]:
    """Import and export formats.

    Returns:
        ``core.hooktypes.DataFormat`` objects. An ``exporter`` turns a list of row dicts
        into file bytes; an ``importer`` turns uploaded bytes into row dicts that the
        core validates like form input.

    Example::

        @hookimpl
        def data_formats():
            return [DataFormat(key="commerceml", label="1C CommerceML", entity="client",
                               media_type="application/xml", importer=parse_cml)]
    """


@hookspec
def jinja_environment(env: Any) -> None:
    """Add filters, tests or globals to the Jinja environment.

    Args:
        env: the ``jinja2.Environment`` shared by every page.

    Example::

        @hookimpl
        def jinja_environment(env):
            env.filters["duration"] = lambda s: f"{s // 60}:{s % 60:02d}"
    """


@hookspec
def backup_items() -> list[Any]:
    """Extra files or folders a backup must include.

    Returns:
        ``core.hooktypes.BackupItem`` objects (name and path). The database and the
        attachments folder are always included.

    Example::

        @hookimpl
        def backup_items():
            return [BackupItem(name="recordings", path=settings.data_dir / "recordings")]
    """


@hookspec
def background_services() -> list[Any]:
    """Long-lived asyncio tasks, run by exactly one process of the install.

    A connection that must exist once per install (an Asterisk AMI socket, an IMAP
    IDLE session) cannot live in every web process. The core runs each service in the
    process that owns the schedule: embedded mode -> the web process, on its event
    loop; server mode -> the single ``kartoteka scheduler`` process, on an event loop
    of its own. Other processes never run them, so work that must reach the service
    from a web request goes through the database, a job, or its own short connection.

    Returns:
        ``core.hooktypes.BackgroundService`` objects. ``run`` is awaited until the
        process stops (then it is cancelled: clean up in ``finally``). If it returns
        or raises, the core logs it and starts it again after a pause (5 s, doubling
        up to 5 minutes), so a service handles its own expected errors and leaves
        surprises to the supervisor.

    Example::

        async def keep_pbx_connected() -> None:
            while True:
                async with connect_to_pbx() as pbx:
                    async for event in pbx.events():
                        await record(event)

        @hookimpl
        def background_services():
            return [BackgroundService(name="telephony.ami", run=keep_pbx_connected)]
    """


@hookspec
def phone_actions() -> list[Any]:
    """Buttons shown next to every phone number (client card, contacts, client list).

    Collected once when the app starts; each page shows the actions whose
    ``permission`` its user has. A click POSTs the number (form field ``number``,
    as stored: E.164 when it parsed) to ``url`` with htmx; the HTML fragment the
    route answers is shown right next to the number (``pending`` while it runs), so
    answer a short status ("Your phone 101 is busy") and say what went wrong with
    a 200, not an error status.

    Returns:
        ``core.hooktypes.PhoneAction`` objects; give ``label`` as a lazy string
        (``core.i18n.lazy_gettext``) since it is shown in each user's language.

    Example::

        @post("/call", opt=needs("telephony.calls.make"), status_code=200)
        async def call(request: Request) -> str:
            number = (await form_data(request))["number"]
            result = await originate(current_user(request)["id"], number)
            return escape(result.message)

        @hookimpl
        def phone_actions():
            return [PhoneAction(key="telephony.call", label=_l("Call"), icon="📞",
                                url="/p/telephony/call", permission="telephony.calls.make",
                                pending=_l("Ringing your phone…"))]
    """
