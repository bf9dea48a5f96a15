"""The `kartoteka` command: run, migrate, plugins, users, demo, worker, scheduler."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import socket
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


def cmd_upgrade(args: argparse.Namespace) -> int:
    """Exit 0: upgraded or nothing to do; 2: refused, nothing changed; 3: a migration
    failed and the database was put back (maintenance stays on with the reason)."""
    from core.upgrade import run_upgrade

    return run_upgrade(retry=args.retry)


def cmd_run(args: argparse.Namespace) -> int:
    import uvicorn

    from core.setup import first_run
    from core.upgrade import EXIT_REFUSED, failed_upgrade, run_upgrade

    settings = get_settings()
    # Migrations go through the safe upgrade: a copy first, put back if one fails.
    if failed_upgrade() is None and run_upgrade() == EXIT_REFUSED:
        return 2
    if failed_upgrade() is None:
        for line in asyncio.run(first_run()):
            _out(line)
    else:
        _out("the last upgrade failed: serving the maintenance page (see upgrade-failed.json)")
    workers = 1 if settings.embedded else (args.workers or settings.web_workers)
    host, port = args.host or settings.host, args.port or settings.port
    mode = (
        "embedded (SQLite, jobs in-process)"
        if settings.embedded
        else f"server (broker {settings.broker_url.split('@')[-1]})"
    )
    _out(f"Kartoteka on http://{host}:{port}  mode: {mode}  data: {settings.data_dir}")
    config = uvicorn.Config(
        "core.web.asgi:app",
        host=host,
        port=port,
        workers=workers,
        log_level="debug" if settings.debug else "info",
        proxy_headers=True,
        # A stop or restart waits at most this long for open requests; live streams
        # (GET /live) end at the signal already (core.live.end_streams_on_exit).
        timeout_graceful_shutdown=5,
    )
    if workers == 1:
        uvicorn.Server(config).run()
        return 0
    from uvicorn.supervisors import Multiprocess

    # The shared listening socket must have Nagle off: uvicorn's worker processes do not
    # set it, and every keep-alive response then waits ~40 ms for the client's delayed ACK.
    listener = config.bind_socket()
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    Multiprocess(config, sockets=[listener]).run()
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


# --- backups -----------------------------------------------------------------------------


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def _backup_command(work: Callable[[], Awaitable[Any]]) -> int:
    """Run a backup action as the operator; restic and backup failures end in one line."""
    from core.backup.engine import BackupFailed
    from core.backup.restic import ResticError

    async def main() -> Any:
        from core.db import bind_tables
        from core.services import audit

        bind_tables()
        audit.system_actor.set(f"cli:{getpass.getuser()}")
        return await work()

    try:
        asyncio.run(main())
    except (BackupFailed, ResticError) as exc:
        return _fail(exc.message)
    return 0


def _say_verified(result: dict[str, Any]) -> None:
    _out(
        f"verified: backup {result['snapshot_id'][:8]} restored into a scratch database; "
        f"migrations and row counts match ({result['seconds']['total']:.1f} s)"
    )


def cmd_backup_now(args: argparse.Namespace) -> int:
    from core.backup.engine import run_backup, verify_latest

    async def work() -> None:
        result = await run_backup("manual")
        if result["initialised"]:
            _out(
                "initialised the backup repository (keep its password file safe: "
                "without it no backup can be read)"
            )
        _out(
            f"backup {result['snapshot_id'][:8]} saved: {_size(result['size_bytes'])} "
            f"({_size(result['data_added'])} new in the repository) "
            f"in {result['seconds']['total']:.1f} s"
        )
        if result["warning"]:
            _out(f"warning: {result['warning']}")
        _say_verified(await verify_latest())

    return _backup_command(work)


def cmd_backup_list(args: argparse.Namespace) -> int:
    from core.backup.engine import list_backups

    async def work() -> None:
        backups = await asyncio.to_thread(list_backups)
        if not backups:
            _out("the repository holds no backup yet")
        for backup in backups:
            kind = "postgresql" if backup["dump"] else "sqlite"
            when = backup["time"][:19].replace("T", " ")
            _out(f"{backup['short_id']}  {when} UTC  {backup['trigger'] or '-':<12} {kind}")

    return _backup_command(work)


def cmd_backup_verify(args: argparse.Namespace) -> int:
    from core.backup.engine import verify_latest

    async def work() -> None:
        _say_verified(await verify_latest())

    return _backup_command(work)


def cmd_backup_check(args: argparse.Namespace) -> int:
    from core.backup.engine import run_check

    async def work() -> None:
        result = await run_check()
        _out(f"repository check passed (data subset {result['subset']})")

    return _backup_command(work)


def _confirmed(prompt: str, expected: set[str]) -> bool:
    try:
        answer = input(prompt).strip()
    except EOFError:  # no terminal: only --yes can confirm
        answer = ""
    return bool(answer) and answer in expected


def cmd_backup_restore(args: argparse.Namespace) -> int:
    from core.backup.restore import describe, restore_backup

    found: dict[str, Any] = {}

    async def look() -> None:
        found["backup"], found["manifest"] = await asyncio.to_thread(describe, args.snapshot)

    failed = _backup_command(look)
    if failed:
        return failed
    backup, manifest = found["backup"], found["manifest"]
    counts = manifest.get("counts", {})
    _out(
        f"backup {backup['short_id']} taken {backup['time'][:19].replace('T', ' ')} UTC "
        f"({backup['trigger'] or 'manual'}) by Kartoteka {manifest.get('kartoteka_version', '?')}, "
        f"{manifest.get('database')} database: {counts.get('core_client', '?')} clients, "
        f"{counts.get('core_deal', '?')} deals, {counts.get('core_attachment', '?')} files"
    )
    _out(
        "Restoring replaces the current database, attachments and settings with the backup's. "
        "Kartoteka answers 'maintenance' meanwhile; a safety copy of the current data is kept."
    )
    expected = {backup["short_id"], backup["id"]}
    if not args.yes and not _confirmed(
        f"Type the snapshot id ({backup['short_id']}) to restore it: ", expected
    ):
        return _fail("not confirmed: nothing was changed")

    async def work() -> None:
        result = await restore_backup(backup, manifest, progress=lambda step: _out(f"... {step}"))
        _out(f"restored backup {backup['short_id']} in {result['seconds']:.1f} s")
        for label, path in result["kept"].items():
            _out(f"kept from before the restore ({label}): {path}")
        if "database" in result["kept"]:
            _out(f"to undo: kartoteka backup put-back {result['kept']['database']}")
        _out("Restart Kartoteka so that every process starts from the restored data and settings.")

    return _backup_command(work)


def cmd_backup_put_back(args: argparse.Namespace) -> int:
    from pathlib import Path

    from core.backup.restore import put_back

    path = Path(args.path).resolve()
    _out(f"This puts the database kept in {path} (and the files kept with it) back in place.")
    if not args.yes and not _confirmed("Type yes to go on: ", {"yes"}):
        return _fail("not confirmed: nothing was changed")

    async def work() -> None:
        await put_back(path, progress=lambda step: _out(f"... {step}"))
        _out(f"put back {path}; Kartoteka is out of maintenance")

    return _backup_command(work)


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
    upgrade = add(
        "upgrade", cmd_upgrade, "copy the database, migrate, and put the copy back on failure"
    )
    upgrade.add_argument(
        "--retry", action="store_true", help="try again after a failed upgrade was rolled back"
    )
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
    backup = sub.add_parser("backup", help="back up, list, verify, check and restore backups")
    backup_sub = backup.add_subparsers(dest="backup_command", required=True)
    backup_sub.add_parser("now", help="back up now, then prove the backup restores").set_defaults(
        handler=cmd_backup_now
    )
    backup_sub.add_parser("list", help="the backups in the repository").set_defaults(
        handler=cmd_backup_list
    )
    backup_sub.add_parser(
        "verify", help="restore the latest backup into a scratch database and check it"
    ).set_defaults(handler=cmd_backup_verify)
    backup_sub.add_parser(
        "check", help="restic check of the repository (reads a fifth of the data)"
    ).set_defaults(handler=cmd_backup_check)
    restore = backup_sub.add_parser(
        "restore", help="replace the data with a backup's (keeps a safety copy first)"
    )
    restore.add_argument("snapshot", help="a snapshot id from `kartoteka backup list`, or latest")
    restore.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    restore.set_defaults(handler=cmd_backup_restore)
    put_back = backup_sub.add_parser(
        "put-back", help="undo a restore: put the safety copy it kept back in place"
    )
    put_back.add_argument("path", help="the safety copy's database file (printed by restore)")
    put_back.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    put_back.set_defaults(handler=cmd_backup_put_back)
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
