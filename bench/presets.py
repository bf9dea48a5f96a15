"""The benchmarks' shared size and engine options: ``--preset 1m|100k``, ``--engine``.

Every size gets its own database (PostgreSQL) or file (SQLite), so switching presets
never reloads the other one's data: ``kartoteka_bench`` holds the million,
``kartoteka_bench_100k`` the small preset, ``/var/tmp/kartoteka-bench-100k.sqlite3``
the embedded mode's. ``--clients`` and ``--database-url`` override both (the CI smoke
test runs 1,000 clients on its own test database).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from bench.dataset import DEFAULT_DATABASE_URL

PRESETS = {"1m": 1_000_000, "100k": 100_000}
SQLITE_DIR = "/var/tmp"


@dataclass(frozen=True)
class Target:
    clients: int
    database_url: str
    preset: str

    @property
    def engine(self) -> str:
        return "sqlite" if self.database_url.startswith("sqlite") else "postgresql"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS), default="1m", help="dataset size")
    parser.add_argument("--engine", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--clients", type=int, help="a size other than the preset's")
    parser.add_argument("--database-url", help="overrides the preset's database")


def resolve(args: argparse.Namespace) -> Target:
    clients = args.clients or PRESETS[args.preset]
    name = args.preset if not args.clients else str(clients)
    if args.database_url:
        url = args.database_url
    elif args.engine == "sqlite":
        url = f"sqlite:///{SQLITE_DIR}/kartoteka-bench-{name}.sqlite3"
    elif name == "1m":
        url = DEFAULT_DATABASE_URL
    else:
        url = f"{DEFAULT_DATABASE_URL}_{name}"
    return Target(clients=clients, database_url=url, preset=name)
