"""How long a backup and its verification (a real test restore) take at N clients.

    python -m bench.backup                       # PostgreSQL, 1,000,000 clients
    python -m bench.backup --engine sqlite --preset 100k   # embedded mode

Reuses the dataset of bench.dataset (loaded if missing), backs it up with the
appliance's own code (core.backup.engine) into a fresh restic repository in a temporary
folder, verifies it, and prints the timings of each step with the sizes involved.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import presets
from bench.dataset import ensure_dataset
from bench.server import ensure_database


def _folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _database_size(database_url: str) -> int:
    if database_url.startswith("sqlite"):
        return Path(database_url.split("///", 1)[1]).stat().st_size
    out = subprocess.run(
        ["psql", database_url, "-Atc", "SELECT pg_database_size(current_database())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip())


async def measure(database_url: str, clients: int, work_dir: Path) -> dict[str, Any]:
    """Point a runtime at the bench database and a new repository, then back up and verify."""
    repository = work_dir / "repository"
    password = work_dir / "password"
    password.write_text(secrets.token_urlsafe(24))
    os.environ.update(
        DATABASE_URL=database_url,
        BROKER_URL="",
        KARTOTEKA_DATA_DIR=str(work_dir / "data"),
        KARTOTEKA_PLUGINS="",
        KARTOTEKA_BACKUP_REPOSITORY=str(repository),
        KARTOTEKA_BACKUP_PASSWORD_FILE=str(password),
    )
    from core.db import bind_tables, migrate
    from core.runtime import build_runtime, set_runtime
    from core.settings import reload_settings

    if not database_url.startswith("sqlite"):
        await ensure_database(database_url)
    set_runtime(build_runtime(reload_settings()))
    with contextlib.redirect_stdout(io.StringIO()):  # Piccolo narrates every migration
        await migrate()
    bind_tables()
    dataset = await ensure_dataset(database_url, clients)

    from core.backup.engine import run_backup, verify_latest

    started = time.monotonic()
    backup = await run_backup(trigger="manual")
    backup_seconds = time.monotonic() - started
    started = time.monotonic()
    verify = await verify_latest()
    verify_seconds = time.monotonic() - started
    return {
        "clients": dataset.clients,
        "database": "sqlite" if database_url.startswith("sqlite") else "postgresql",
        "database_bytes": _database_size(database_url),
        "repository_bytes": _folder_size(repository),
        "backup_seconds": round(backup_seconds, 1),
        "verify_seconds": round(verify_seconds, 1),
        "backup_steps": backup.get("seconds", {}),
        "verify_steps": verify.get("seconds", {}),
    }


def _print(result: dict[str, Any]) -> None:
    mb = 1024 * 1024
    print(
        f"{result['database']}, {result['clients']:,} clients: "
        f"database {result['database_bytes'] / mb:,.0f} MB, "
        f"repository {result['repository_bytes'] / mb:,.0f} MB"
    )
    print(f"backup (dump, upload, retention): {result['backup_seconds']:.1f} s")
    for step, seconds in result["backup_steps"].items():
        print(f"  {step:<24} {seconds:8.1f} s")
    print(
        f"verification (restore into a scratch database, compare): {result['verify_seconds']:.1f} s"
    )
    for step, seconds in result["verify_steps"].items():
        print(f"  {step:<24} {seconds:8.1f} s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    presets.add_arguments(parser)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    target = presets.resolve(args)
    work_dir = Path(tempfile.mkdtemp(prefix="kartoteka-bench-backup-"))
    try:
        result = asyncio.run(measure(target.database_url, target.clients, work_dir))
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    _print(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
