"""Safe upgrades: refuse what would break an enabled plugin, copy the database, migrate,
and put the copy back automatically when a migration fails (see `core.upgrade.run`)."""

from __future__ import annotations

import asyncio
import sys

from core.upgrade.run import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_ROLLED_BACK,
    FAILED_FILE,
    Outcome,
    failed_upgrade,
    recorded_version,
    upgrade,
)


def run_upgrade(retry: bool = False) -> int:
    """What `kartoteka upgrade` and the container entrypoint call: prints what happened
    (to stderr unless it succeeded) and returns the exit code."""
    outcome = asyncio.run(upgrade(retry=retry))
    stream = sys.stdout if outcome.code == EXIT_OK else sys.stderr
    for line in outcome.lines:
        print(line, file=stream, flush=True)
    return outcome.code


__all__ = [
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_ROLLED_BACK",
    "FAILED_FILE",
    "Outcome",
    "failed_upgrade",
    "recorded_version",
    "run_upgrade",
    "upgrade",
]
