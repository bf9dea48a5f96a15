"""Test set-up shared by the core's and the plugins' tests (loaded by the root
conftest.py): a throw-away data dir and database per test session, set before the
app is imported (settings are read once). ``KARTOTEKA_TEST_DATABASE_URL`` switches
the whole suite to PostgreSQL (see .ci/run)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

_DATA_DIR = Path(tempfile.mkdtemp(prefix="kartoteka-test-"))
os.environ["KARTOTEKA_DATA_DIR"] = str(_DATA_DIR)
os.environ.pop("KARTOTEKA_SETTINGS", None)
# tests/plugins/sample implements every hook; the in-repo plugins run with the core so
# that the route-guard and hook tests cover them too.
os.environ["KARTOTEKA_PLUGINS"] = "sample,telephony,mail"
os.environ.setdefault("KARTOTEKA_LOCALE", "en")
os.environ["DATABASE_URL"] = os.environ.get("KARTOTEKA_TEST_DATABASE_URL", "")
os.environ["BROKER_URL"] = os.environ.get("KARTOTEKA_TEST_BROKER_URL", "")

from tests.support import TEST_PLUGIN_PACKAGE, reset_database  # noqa: E402


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_DATA_DIR, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def cheap_password_hashing() -> None:
    """Production argon2 costs ~0.1 s a hash by design; tests create hundreds of users."""
    from argon2 import PasswordHasher

    from core.services import users

    users._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture(scope="session")
def runtime() -> Iterator[Any]:
    from core.runtime import build_runtime, set_runtime
    from core.settings import reload_settings

    rt = build_runtime(reload_settings(), extra_plugin_packages=(TEST_PLUGIN_PACKAGE,))
    set_runtime(rt)
    yield rt


@pytest.fixture(scope="session")
async def migrated(runtime: Any) -> AsyncIterator[None]:
    from core import i18n
    from core.db import migrate

    await reset_database(runtime.settings)
    await migrate()
    i18n.load_catalogs(runtime.settings.languages, [])
    yield


@pytest.fixture
async def db(migrated: None) -> AsyncIterator[None]:
    """A clean database for each test (tables emptied, schema kept)."""
    from core.services.roles import sync_roles
    from tests.support import truncate_all

    await truncate_all()
    await sync_roles()
    yield


@pytest.fixture
async def admin(db: None) -> dict[str, Any]:
    from core.services import users

    return await users.create_user("admin", "Anna Admin", "admin-password", role="admin")


@pytest.fixture
async def manager(db: None) -> dict[str, Any]:
    from core.services import users

    return await users.create_user("manager", "Max Manager", "manager-password", role="manager")


@pytest.fixture
async def app(migrated: None, runtime: Any) -> AsyncIterator[Any]:
    from core.web.app import create_app

    yield create_app(runtime)


@pytest.fixture
async def client(app: Any, db: None) -> AsyncIterator[Any]:
    """An anonymous HTTP client; see `login` for a logged-in one."""
    from litestar.testing import AsyncTestClient

    async with AsyncTestClient(app=app) as http:
        yield http


@pytest.fixture
async def as_manager(client: Any, manager: dict[str, Any]) -> Any:
    from tests.support import login

    await login(client, "manager", "manager-password")
    return client


@pytest.fixture
async def as_admin(client: Any, admin: dict[str, Any]) -> Any:
    from tests.support import login

    await login(client, "admin", "admin-password")
    return client
