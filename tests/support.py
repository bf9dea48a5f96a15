"""Helpers for tests: database reset, login, CSRF."""

from __future__ import annotations

import re
from typing import Any

TEST_PLUGIN_PACKAGE = "tests.plugins.sample"


async def reset_database(settings: Any) -> None:
    """Start the session from an empty database on either engine."""
    if settings.is_sqlite:
        for suffix in ("", "-wal", "-shm"):
            path = settings.sqlite_path.with_name(settings.sqlite_path.name + suffix)
            path.unlink(missing_ok=True)
        return
    import asyncpg

    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    finally:
        await conn.close()


async def truncate_all() -> None:
    from piccolo.table import Table

    from core.db import app_registry, get_engine

    tables: list[type[Table]] = []
    for app_config in app_registry().app_configs.values():
        tables.extend(app_config.table_classes)
    names = [t._meta.tablename for t in tables]
    engine = get_engine()
    if engine.engine_type == "postgres":
        await engine.run_ddl(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE")
        return
    # Children before parents: plugin apps come after the core, tables after those
    # they reference, so the reversed list deletes without breaking a foreign key.
    async with engine.transaction():
        for name in reversed(names):
            await engine.run_ddl(f"DELETE FROM {name}")


def csrf_token(client: Any) -> str:
    return client.cookies.get("csrftoken", "")


async def login(client: Any, username: str, password: str) -> None:
    await client.get("/login")
    response = await client.post(
        "/login",
        data={"username": username, "password": password, "_csrf_token": csrf_token(client)},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text


async def post(client: Any, url: str, data: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """A form POST as the browser (htmx) sends it: CSRF header included."""
    headers = {"x-csrftoken": csrf_token(client), **kwargs.pop("headers", {})}
    return await client.post(url, data=data or {}, headers=headers, **kwargs)


def field_error(html: str, field: str) -> str | None:
    match = re.search(rf'id="error-{field}">([^<]*)<', html)
    return match.group(1) if match else None
