"""The query plans behind the timings: the SQL a service really sends, under EXPLAIN.

The SQL is captured from the service itself (not re-typed here), so the plans stay
true when the service changes.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

SKIPPED_NODES = {"Limit", "Result", "Hash", "Materialize", "Memoize", "Gather"}


@dataclass
class Plan:
    role: str
    query: str
    ms: float
    """Execution time: EXPLAIN ANALYZE's on PostgreSQL (the sixth execution of the prepared
    statement, as on the server's connections), the median of 5 runs on SQLite."""
    steps: str
    """Scans with their index, joins and sorts, outermost first."""


async def captured_sql(call: Callable[[], Awaitable[Any]]) -> list[tuple[str, list[Any]]]:
    """The compiled SQL and parameters of every query `call` runs, through Piccolo's
    query builder or as raw SQL through `core.db.fetch`."""
    from core import db

    captured: list[tuple[str, list[Any]]] = []
    engine_class = type(db.get_engine())  # engines use __slots__: wrap the method on the class
    original = engine_class.run_querystring
    original_native = db._run_native

    async def recording(self: Any, querystring: Any, *args: Any, **kwargs: Any) -> Any:
        sql, values = querystring.compile_string(engine_type=self.engine_type)
        captured.append((sql, list(values)))
        return await original(self, querystring, *args, **kwargs)

    async def recording_native(engine: Any, query: str, args: list[Any]) -> Any:
        captured.append((query, list(args)))
        return await original_native(engine, query, args)

    engine_class.run_querystring = recording  # type: ignore[method-assign]
    db._run_native = recording_native  # type: ignore[assignment]
    try:
        await call()
    finally:
        engine_class.run_querystring = original  # type: ignore[method-assign]
        db._run_native = original_native  # type: ignore[assignment]
    return captured


def _pg_steps(plan: dict[str, Any]) -> str:
    steps: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        step = node["Node Type"]
        if "Index Name" in node:
            step += f" {node['Index Name']}"
        elif "Relation Name" in node:
            step += f" {node['Relation Name']}"
        if "Relation Name" in node or "Index Name" in node:
            rows = node.get("Actual Rows", 0) * node.get("Actual Loops", 1)
            removed = node.get("Rows Removed by Filter", 0)
            step += f" (rows {rows}" + (f", filtered out {removed})" if removed else ")")
        if node["Node Type"] not in SKIPPED_NODES:
            steps.append(step)
        for child in node.get("Plans", []):
            walk(child)

    walk(plan["Plan"])
    return "; ".join(steps)


def _literal(value: Any) -> str:
    """A parameter as an SQL literal (EXECUTE takes no bind parameters)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'"
    return "'" + str(value).replace("'", "''") + "'"


async def explain(sql: str, values: list[Any], database_url: str) -> tuple[float, str]:
    """(execution ms, plan steps) of one query, as the server runs it."""
    if database_url.startswith("sqlite"):
        from piccolo.engine.sqlite import convert_datetime_in  # how Piccolo binds datetimes

        args = [convert_datetime_in(v) if isinstance(v, datetime) else v for v in values]
        with sqlite3.connect(database_url.split("///", 1)[1]) as conn:
            plan = conn.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall()
            timings = []
            for _ in range(5):
                started = time.perf_counter()
                conn.execute(sql, args).fetchall()
                timings.append((time.perf_counter() - started) * 1000)
        return sorted(timings)[2], "; ".join(str(row[-1]) for row in plan)
    import asyncpg

    # The server's pooled connections reuse prepared statements (asyncpg caches them),
    # and from the sixth execution on PostgreSQL may switch to a generic plan, one
    # chosen without the parameters' values. Explain that sixth execution.
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"PREPARE bench_plan AS {sql}")
        execute = "EXECUTE bench_plan" + (
            f"({', '.join(_literal(v) for v in values)})" if values else ""
        )
        for _ in range(5):
            await conn.execute(execute)
        raw = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {execute}")
    finally:
        await conn.close()
    plan = json.loads(raw)[0]
    # A generic plan shows the parameters ($1...) where a custom one shows their values.
    generic = " [generic plan]" if values and re.search(r"\$[1-9]", raw) else ""
    return float(plan["Execution Time"]), _pg_steps(plan) + generic


async def explain_call(
    role: str, label: str, call: Callable[[], Awaitable[Any]], database_url: str
) -> list[Plan]:
    """One Plan per query `call` sends (a list page sends the page, then its phones)."""
    plans = []
    queries = await captured_sql(call)
    for i, (sql, values) in enumerate(queries):
        ms, steps = await explain(sql, values, database_url)
        part = f" [{i + 1}/{len(queries)}]" if len(queries) > 1 else ""
        plans.append(Plan(role, label + part, ms, steps))
    return plans
