"""Database engine, the Piccolo app registry and migrations."""

from __future__ import annotations

import sqlite3
from functools import lru_cache

from piccolo.apps.migrations.commands.base import BaseMigrationManager
from piccolo.apps.migrations.commands.forwards import ForwardsMigrationManager
from piccolo.conf.apps import AppRegistry
from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine
from piccolo.engine.sqlite import SQLiteEngine

from core.runtime import get_runtime

CORE_APP = "core.piccolo_app"


@lru_cache(maxsize=4)
def _engine_for(database_url: str) -> Engine:
    if database_url.startswith("sqlite:///"):
        path = database_url.removeprefix("sqlite:///")
        # timeout: wait for the single SQLite writer instead of failing with "locked".
        return SQLiteEngine(path=path, timeout=30)
    return PostgresEngine(config={"dsn": database_url})


def get_engine() -> Engine:
    return _engine_for(get_runtime().settings.database_url)


def app_modules() -> list[str]:
    """Core first, then the enabled plugins' apps in dependency order."""
    modules = [CORE_APP]
    for module in get_runtime().plugins.collect("piccolo_apps"):
        if module not in modules:
            modules.append(module)
    return modules


def app_registry() -> AppRegistry:
    return AppRegistry(apps=app_modules())


def bind_tables() -> None:
    """Point every registered table at our engine (Piccolo would otherwise guess)."""
    from piccolo.apps.migrations.tables import Migration

    engine = get_engine()
    Migration._meta.db = engine  # Piccolo's bookkeeping of applied migrations
    for app_config in app_registry().app_configs.values():
        for table in app_config.table_classes:
            table._meta.db = engine


def prepare_sqlite(path: str) -> None:
    """WAL lets readers work while the one writer writes; it is a property of the file."""
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


class MigrationError(RuntimeError):
    pass


async def migrate(app_names: list[str] | None = None) -> list[str]:
    """Apply pending migrations of the core and enabled plugins; returns a log."""
    settings = get_runtime().settings
    if settings.is_sqlite:
        prepare_sqlite(str(settings.sqlite_path))
    bind_tables()
    names = app_names or BaseMigrationManager().get_sorted_app_names()
    log: list[str] = []
    for name in names:
        manager = ForwardsMigrationManager(app_name=name)
        result = await manager.run()
        if not result.success:
            raise MigrationError(f"migrations of {name!r} failed: {result.message}")
        log.append(f"{name}: {result.message}")
    return log
