"""Runs one mailbox sync in its own process and SIGKILLs itself in the middle of a batch.

Used by test_crash.py: ``python -m plugins.mail.tests.sync_child <mailbox id> <N>``
stores messages in batches of 10 and, while writing the N-th message inside the batch's
open transaction, kills the process the hard way (no cleanup, no rollback by Python).
The environment (data dir, database URL, plugins) is inherited from the test session.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys


async def main(mailbox_id: int, kill_at: int) -> None:
    from core.db import bind_tables
    from core.runtime import build_runtime, set_runtime
    from core.settings import reload_settings
    from plugins.mail.sync import engine

    set_runtime(build_runtime(reload_settings(), extra_plugin_packages=("tests.plugins.sample",)))
    bind_tables()
    store = engine._store
    written = 0

    async def store_then_maybe_die(*args: object, **kwargs: object) -> None:
        nonlocal written
        await store(*args, **kwargs)  # type: ignore[arg-type]
        written += 1
        if written == kill_at:
            print(f"killing myself after {written} rows in the open batch", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    engine._store = store_then_maybe_die  # type: ignore[assignment]
    await engine.sync_mailbox(mailbox_id, batch_size=10)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
