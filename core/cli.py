"""The `kartoteka` command: run, migrate, plugins, users, demo, worker, scheduler."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from core.plugins import PluginError, discover, resolve
from core.settings import SettingsError, get_settings, reload_settings, write_settings_file


def _out(message: str) -> None:
    print(message, flush=True)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return 2


async def _prepare() -> list[str]:
    """Migrate, then make sure the install can be logged into and used."""
    from core.db import migrate
    from core.setup import first_run

    log = await migrate()
    log += await first_run()
    return log


def cmd_migrate(args: argparse.Namespace) -> int:
    for line in asyncio.run(_prepare()):
        _out(line)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import uvicorn

    settings = get_settings()
    for line in asyncio.run(_prepare()):
        _out(line)
    workers = 1 if settings.embedded else (args.workers or settings.web_workers)
    host, port = args.host or settings.host, args.port or settings.port
    mode = (
        "embedded (SQLite, jobs in-process)"
        if settings.embedded
        else f"server (broker {settings.broker_url.split('@')[-1]})"
    )
    _out(f"Kartoteka on http://{host}:{port}  mode: {mode}  data: {settings.data_dir}")
    uvicorn.run(
        "core.web.asgi:app",
        host=host,
        port=port,
        workers=workers,
        log_level="debug" if settings.debug else "info",
        proxy_headers=True,
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from core.jobs.worker import run_worker_process

    settings = get_settings()
    if settings.embedded:
        return _fail("no BROKER_URL set: in embedded mode `kartoteka run` runs the jobs itself")
    run_worker_process(settings)
    return 0


def cmd_scheduler(args: argparse.Namespace) -> int:
    from core.jobs.scheduler import run_scheduler_process

    settings = get_settings()
    if settings.embedded:
        return _fail(
            "no BROKER_URL set: in embedded mode `kartoteka run` runs the scheduler itself"
        )
    run_scheduler_process(settings)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from core.demo import load_demo

    async def main() -> str:
        from core.services import audit

        audit.system_actor.set(f"cli:{getpass.getuser()}")
        await _prepare()
        return await load_demo(clients=args.clients)

    _out(asyncio.run(main()))
    return 0


async def _record(action: str, object_type: str, object_id: str, summary: str = "") -> None:
    """Audit what an operator did on the command line, under their OS account name."""
    from core.db import bind_tables
    from core.services import audit

    bind_tables()
    audit.system_actor.set(f"cli:{getpass.getuser()}")
    await audit.record(action, object_type, object_id, summary)


# --- plugins ---------------------------------------------------------------------------


def _save_plugins(names: list[str]) -> None:
    settings = get_settings()
    values = dict(settings.file_values)
    values["plugins"] = names
    write_settings_file(settings.settings_file, values)
    if os.environ.get("KARTOTEKA_PLUGINS"):
        _out("note: KARTOTEKA_PLUGINS is set in the environment and overrides the settings file")


def cmd_plugins_list(args: argparse.Namespace) -> int:
    enabled = set(get_settings().plugins)
    installed = discover()
    if not installed:
        _out("no plugins installed")
    for name, plugin in sorted(installed.items()):
        mark = "enabled " if name in enabled else "disabled"
        depends = (
            f"  (depends on {', '.join(plugin.manifest.depends)})"
            if plugin.manifest.depends
            else ""
        )
        _out(f"{mark}  {name} {plugin.manifest.version}  {plugin.manifest.summary}{depends}")
    for name in sorted(enabled - set(installed)):
        _out(f"MISSING   {name}  enabled in settings but not installed")
    return 0


def cmd_plugins_enable(args: argparse.Namespace) -> int:
    from core.plugins import check_loadable

    current = get_settings().plugins
    installed = discover()
    needed = resolve([*current, args.name], installed)
    added = [p.name for p in needed if p.name not in current]
    check_loadable(needed)
    if not added:
        _out(f"{args.name} is already enabled")
        return 0
    extra = [name for name in added if name != args.name]
    if extra:
        _out(f"{args.name} depends on {', '.join(extra)}: enabling {', '.join(extra)} too")
    _save_plugins([p.name for p in needed])
    reload_settings()
    from core.runtime import set_runtime

    set_runtime(None)
    for line in asyncio.run(_prepare()):
        _out(line)
    for name in added:
        asyncio.run(_record("plugin.enable", "plugin", name, f"{name} enabled"))
    _out(f"enabled: {', '.join(added)}. Restart Kartoteka to load them.")
    return 0


def cmd_plugins_disable(args: argparse.Namespace) -> int:
    current = get_settings().plugins
    if args.name not in current:
        _out(f"{args.name} is not enabled")
        return 0
    installed = discover()
    dependants = [
        name
        for name in current
        if name in installed and args.name in installed[name].manifest.depends
    ]
    if dependants:
        return _fail(
            f"{', '.join(dependants)} depend(s) on {args.name}: disable {', '.join(dependants)} first"
        )
    _save_plugins([name for name in current if name != args.name])
    asyncio.run(_record("plugin.disable", "plugin", args.name, f"{args.name} disabled"))
    _out(
        f"disabled {args.name}; its data is kept and comes back when it is enabled again. Restart Kartoteka."
    )
    return 0


# --- users -------------------------------------------------------------------------------


def cmd_users_create(args: argparse.Namespace) -> int:
    from core.db import bind_tables
    from core.services import users

    async def main() -> str:
        bind_tables()
        password = args.password or users.generate_password()
        await users.create_user(args.username, args.name or args.username, password, role=args.role)
        return password

    password = asyncio.run(main())
    _out(f"created {args.role} {args.username} with password: {password}")
    return 0


async def _user_id(username: str) -> int | None:
    from core.db import bind_tables
    from core.tables import User

    bind_tables()
    user = await User.select(User.id).where(User.username == username).first()
    return int(user["id"]) if user else None


def _as_operator(username: str, action: Callable[[int], Awaitable[Any]]) -> Any:
    """Run a user-admin action from the shell, audited under the OS account's name."""
    from core.services import audit

    async def main() -> Any:
        user_id = await _user_id(username)
        if user_id is None:
            raise LookupError(username)
        audit.system_actor.set(f"cli:{getpass.getuser()}")
        return await action(user_id)

    return asyncio.run(main())


def cmd_users_reset_password(args: argparse.Namespace) -> int:
    """For the owner locked out of the only admin account: no web page can help then."""
    from core.services import user_admin

    try:
        password = _as_operator(args.username, user_admin.reset_password)
    except LookupError:
        return _fail(f"no user {args.username!r}")
    _out(f"temporary password for {args.username} (to be changed at login): {password}")
    return 0


def cmd_users_reset_totp(args: argparse.Namespace) -> int:
    from core.services import user_admin

    try:
        done = _as_operator(args.username, user_admin.reset_second_factor)
    except LookupError:
        return _fail(f"no user {args.username!r}")
    _out(f"second factor of {args.username} {'removed' if done else 'was not set up'}")
    return 0


def cmd_users_token(args: argparse.Namespace) -> int:
    from core.db import bind_tables
    from core.services import api_tokens
    from core.tables import User

    async def main() -> str | None:
        bind_tables()
        user = await User.select(User.id).where(User.username == args.username).first()
        if user is None:
            return None
        return await api_tokens.create_token(user["id"], args.name)

    token = asyncio.run(main())
    if token is None:
        return _fail(f"no user {args.username!r}")
    _out(f"API token for {args.username} ({args.name}), shown once:\n{token}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kartoteka", description="Kartoteka CRM")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(
        name: str, handler: Callable[[argparse.Namespace], int], help: str
    ) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help)
        command.set_defaults(handler=handler)
        return command

    run = add("run", cmd_run, "migrate and serve the web app (plus jobs in embedded mode)")
    run.add_argument("--host")
    run.add_argument("--port", type=int)
    run.add_argument("--workers", type=int, help="web processes (server mode only)")
    add("migrate", cmd_migrate, "apply database migrations of the core and enabled plugins")
    add("worker", cmd_worker, "run a job worker (server mode: BROKER_URL set)")
    add("scheduler", cmd_scheduler, "run the single periodic-job scheduler (server mode)")
    demo = add("demo", cmd_demo, "load a demo company (clients, deals, tasks)")
    demo.add_argument("--clients", type=int, default=300)

    plugins = sub.add_parser("plugins", help="list, enable or disable plugins")
    plugin_sub = plugins.add_subparsers(dest="plugins_command", required=True)
    plugin_sub.add_parser("list", help="installed plugins").set_defaults(handler=cmd_plugins_list)
    enable = plugin_sub.add_parser("enable", help="enable a plugin (and its dependencies)")
    enable.add_argument("name")
    enable.set_defaults(handler=cmd_plugins_enable)
    disable = plugin_sub.add_parser("disable", help="disable a plugin (its data is kept)")
    disable.add_argument("name")
    disable.set_defaults(handler=cmd_plugins_disable)

    users_parser = sub.add_parser("users", help="manage users")
    users_sub = users_parser.add_subparsers(dest="users_command", required=True)
    create = users_sub.add_parser("create", help="create a user (prints the password)")
    create.add_argument("username")
    create.add_argument("--name")
    create.add_argument("--role", default="manager", help="a role code, e.g. admin, head, manager")
    create.add_argument("--password")
    create.set_defaults(handler=cmd_users_create)
    reset = users_sub.add_parser(
        "reset-password", help="give a user a temporary password (ends their sessions)"
    )
    reset.add_argument("username")
    reset.set_defaults(handler=cmd_users_reset_password)
    reset_totp = users_sub.add_parser("reset-totp", help="remove a user's second factor")
    reset_totp.add_argument("username")
    reset_totp.set_defaults(handler=cmd_users_reset_totp)
    token = users_sub.add_parser("token", help="create an API token for a user")
    token.add_argument("username")
    token.add_argument("name")
    token.set_defaults(handler=cmd_users_token)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Any = args.handler
    try:
        return int(handler(args))
    except (PluginError, SettingsError) as exc:
        return _fail(str(exc))
    except Exception as exc:
        from core.validation import ValidationError

        if isinstance(exc, ValidationError):
            return _fail("; ".join(f"{field}: {message}" for field, message in exc.errors.items()))
        raise


if __name__ == "__main__":
    sys.exit(main())
