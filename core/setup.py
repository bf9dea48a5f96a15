"""First run: an install that can be logged into and worked in right away."""

from __future__ import annotations

from core.db import bind_tables
from core.services import users
from core.tables import User


async def first_run() -> list[str]:
    """Roles, the first admin (password printed once) and the default pipeline."""
    from core.services.deals import ensure_default_pipeline
    from core.services.roles import sync_roles

    bind_tables()
    log: list[str] = await sync_roles()
    if not await User.exists():
        password = users.generate_password()
        await users.create_user("admin", "Administrator", password, role="admin")
        banner = "=" * 60
        log += [
            banner,
            "First admin login:  user: admin   password: " + password,
            "Change it after logging in. It is not shown again.",
            banner,
        ]
    if await ensure_default_pipeline():
        log.append("created the default sales pipeline")
    return log
