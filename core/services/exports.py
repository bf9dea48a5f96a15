"""CSV and Excel exports of the lists: permitted, limited, traceable and audited.

Rows come only through the list services (`clients.list_clients`, `deals.list_deals`,
`tasks.my_tasks`, `audit.list_entries`), so a file holds exactly what its user sees
on screen: the same record scope and the same hidden fields.

Past a role's limit (rows per export, rows per day) an export is refused, never
truncated: a silently cut file is worse than a clear "no". Every export carries
who made it and when (first line of a CSV, first row and properties of a workbook)
so a leaked file can be traced, and is logged with its row count and filter.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from tempfile import SpooledTemporaryFile
from typing import IO, Any
from zoneinfo import ZoneInfo

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell

from core import access, i18n
from core.default_hooks import EXPORT
from core.i18n import _
from core.runtime import get_runtime
from core.services import audit, clients, deals, tasks
from core.services.common import utcnow, write
from core.validation import format_phone

FORMATS = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
PAGE = 500
"""Rows fetched per keyset page while exporting."""
IN_MEMORY = 8 * 1024 * 1024
"""Bytes of a file kept in memory before it spills to a temporary file."""
UNLIMITED_TASKS = 1_000_000
"""`tasks.my_tasks` has no cursor: the most tasks one user's view can export uncapped."""
_NUMBER_LIKE = re.compile(r"[+-]?[\d\s().,-]*")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class ExportRefused(Exception):
    """The export is not allowed (403) or over the daily allowance (429)."""

    def __init__(self, message: str, status_code: int = 403) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    field: str = ""
    """A hideable field code: the column is left out for roles it is hidden from."""
    value: Callable[[dict[str, Any]], Any] | None = None
    """Computes the cell from the row; default ``row[key]``."""

    def cell(self, row: dict[str, Any]) -> Any:
        return self.value(row) if self.value else row.get(self.key)


@dataclass
class ExportFile:
    filename: str
    media_type: str
    content: IO[bytes]
    """Positioned at the start; the caller streams and closes it."""
    rows: int


def limits() -> tuple[int | None, int | None]:
    """The current user's (rows per export, rows per day); None is unlimited."""
    current = access.current()
    if current.is_admin:
        return None, None
    return current.role.get("export_max_rows"), current.role.get("export_daily_rows")


def row_cap() -> int | None:
    """The most rows an export may hold before it is refused whatever else happens."""
    set_limits = [limit for limit in limits() if limit is not None]
    return min(set_limits) if set_limits else None


def describe(pairs: Iterable[tuple[str, Any]]) -> str:
    """A filter as people read it: ``Manager: Max Manager; Tag: vip`` (empty values left out)."""
    parts = [f"{label}: {value}" for label, value in pairs if value not in (None, "", False)]
    return "; ".join(parts) or _("none")


def exporter(user: dict[str, Any] | None) -> str:
    return f"{user['full_name']} ({user['username']})" if user else "system"


def trace_line(user: dict[str, Any] | None, at: datetime, description: str) -> str:
    """Who exported what and when: the first line of every file, kept in English so
    a leaked file is recognised (and grepped for) whatever language its exporter used."""
    text = f"Exported by {exporter(user)} at {at.isoformat(timespec='seconds')}; "
    text += f"filter: {description}"
    return " ".join(text.split())  # one line: no newline from a search box breaks the header


async def export(
    object_type: str,
    columns: list[Column],
    rows: AsyncIterable[dict[str, Any]] | Iterable[dict[str, Any]],
    fmt: str,
    description: str,
) -> ExportFile:
    """Write the rows as ``fmt`` within the current user's permission and limits.

    Rows are written while they are counted; the first row past the limit stops the
    export and refuses it (`ExportRefused`), and nothing is logged as exported.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}")
    current = access.current()
    changes: dict[str, Any] = {"filter": description, "format": fmt}
    if not current.can(EXPORT):
        await _refuse(object_type, changes, "permission", _("Your role may not export lists."))
    max_rows, daily_rows = limits()
    cap = row_cap()
    columns = [c for c in columns if not (c.field and current.hides(c.field))]
    zone = ZoneInfo(get_runtime().settings.timezone)
    now = utcnow()
    trace = trace_line(current.user, now.astimezone(zone), description)
    writer = (_CsvWriter if fmt == "csv" else _XlsxWriter)(
        zone, trace, exporter(current.user), object_type
    )
    count = 0
    try:
        writer.header([c.header for c in columns])
        async for row in _iterate(rows):
            count += 1
            if cap is not None and count > cap:
                break
            writer.row([c.cell(row) for c in columns])
    except BaseException:
        writer.discard()
        raise
    changes["asked"] = (
        i18n.format_number(count)
        if cap is None or count <= cap
        else _("more than %(n)s", n=i18n.format_number(cap))
    )
    if max_rows is not None and count > max_rows:
        writer.discard()
        await _refuse(
            object_type,
            changes,
            "per_export",
            _(
                "Export refused: you asked for %(asked)s rows, and your role may export at "
                "most %(limit)s rows at a time. Narrow the filter and try again.",
                asked=changes["asked"],
                limit=i18n.format_number(max_rows),
            ),
        )
    content = writer.finish()
    try:
        async with write():
            if daily_rows is not None and current.user_id is not None:
                used = await audit.exported_rows(current.user_id, tasks.day_bounds(now)[0])
                if used + count > daily_rows:
                    raise ExportRefused(
                        _(
                            "Export refused: you asked for %(asked)s rows, and your role may "
                            "export %(limit)s rows a day; %(left)s are left today.",
                            asked=changes["asked"],
                            limit=i18n.format_number(daily_rows),
                            left=i18n.format_number(max(daily_rows - used, 0)),
                        ),
                        429,
                    )
            await audit.record(
                audit.EXPORT,
                object_type,
                "",
                _("%(n)s rows; filter: %(filter)s", n=count, filter=description),
                {"rows": count, "filter": description, "format": fmt},
            )
    except BaseException as error:
        content.close()
        if isinstance(error, ExportRefused):
            await _refuse(object_type, changes, "daily", error.message, error.status_code)
        raise
    if current.user is not None:
        await audit.check_activity(current.user)
    stamp = now.astimezone(zone).strftime("%Y%m%d-%H%M")
    return ExportFile(f"{object_type}-{stamp}.{fmt}", FORMATS[fmt], content, count)


async def _refuse(
    object_type: str, changes: dict[str, Any], reason: str, message: str, status_code: int = 403
) -> None:
    """Log the refusal and raise. Logged as "export.refused" with the rows asked for as
    text ("asked"), never as "rows": only delivered rows count against the daily limit."""
    async with write():
        await audit.record(
            "export.refused", object_type, "", message, {**changes, "reason": reason}
        )
    raise ExportRefused(message, status_code)


async def _iterate(
    rows: AsyncIterable[dict[str, Any]] | Iterable[dict[str, Any]],
) -> AsyncIterator[dict[str, Any]]:
    if isinstance(rows, AsyncIterable):
        async for row in rows:
            yield row
    else:
        for row in rows:
            yield row


# --- file writers ---------------------------------------------------------------------


class _CsvWriter:
    """UTF-8 with a BOM, so Excel opens Cyrillic text correctly; first line is the trace."""

    def __init__(self, zone: ZoneInfo, trace: str, who: str, object_type: str) -> None:
        self.zone = zone
        self.file: IO[bytes] = SpooledTemporaryFile(max_size=IN_MEMORY)  # noqa: SIM115
        self.file.write(codecs.BOM_UTF8)
        self.text = io.TextIOWrapper(self.file, encoding="utf-8", newline="")
        self.text.write(f"# {trace}\r\n")
        self.csv = csv.writer(self.text)

    def header(self, labels: list[str]) -> None:
        self.csv.writerow(labels)

    def row(self, values: list[Any]) -> None:
        self.csv.writerow([_csv_value(v, self.zone) for v in values])

    def discard(self) -> None:
        self.text.close()

    def finish(self) -> IO[bytes]:
        self.text.flush()
        self.text.detach()
        self.file.seek(0)
        return self.file


class _XlsxWriter:
    """A write-only workbook (rows go to disk, not memory); the trace is both the first
    row and the workbook's properties, which survive copying the sheet's contents away."""

    def __init__(self, zone: ZoneInfo, trace: str, who: str, object_type: str) -> None:
        self.zone = zone
        self.book = Workbook(write_only=True)
        self.book.properties.creator = who
        self.book.properties.title = f"Kartoteka: {object_type}"
        self.book.properties.description = trace
        self.sheet = self.book.create_sheet(title=object_type[:31] or "export")
        self.sheet.append([trace])

    def header(self, labels: list[str]) -> None:
        self.sheet.append(labels)

    def row(self, values: list[Any]) -> None:
        self.sheet.append([self._cell(v) for v in values])

    def _cell(self, value: Any) -> Any:
        value = _xlsx_value(value, self.zone)
        if isinstance(value, str) and value.startswith("="):
            cell = WriteOnlyCell(self.sheet, value=value)
            cell.data_type = "s"  # text, never a formula: a client named "=HYPERLINK(...)"
            return cell
        return value

    def discard(self) -> None:
        # The sheet first: its row writer is a generator that, left to the garbage
        # collector, would write its closing tag into a file already closed.
        self.sheet.close()
        self.book.close()

    def finish(self) -> IO[bytes]:
        file: IO[bytes] = SpooledTemporaryFile(max_size=IN_MEMORY)  # noqa: SIM115
        self.book.save(file)
        file.seek(0)
        return file


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, bool):
        return _("yes") if value else _("no")
    return value


def _csv_value(value: Any, zone: ZoneInfo) -> Any:
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(zone).strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    if (
        isinstance(value, str)
        and value[:1] in _FORMULA_START
        and not _NUMBER_LIKE.fullmatch(value)  # numbers and phones stay as they are
    ):
        return "'" + value  # a spreadsheet would run it as a formula
    return value


def _xlsx_value(value: Any, zone: ZoneInfo) -> Any:
    value = _plain(value)
    if isinstance(value, datetime):
        return value.astimezone(zone).replace(tzinfo=None)  # Excel has no time zones
    return value


# --- what each list exports -------------------------------------------------------------


async def pages(
    fetch: Callable[[str], Awaitable[tuple[list[dict[str, Any]], str | None]]],
) -> AsyncIterator[dict[str, Any]]:
    """Every row of a keyset-paged list service, page after page."""
    cursor = ""
    while True:
        rows, next_cursor = await fetch(cursor)
        for row in rows:
            yield row
        if not next_cursor:
            return
        cursor = next_cursor


def client_rows(query: clients.ClientQuery) -> AsyncIterator[dict[str, Any]]:
    return pages(lambda cursor: clients.list_clients(replace(query, cursor=cursor, size=PAGE)))


def deal_rows(query: deals.DealQuery) -> AsyncIterator[dict[str, Any]]:
    return pages(lambda cursor: deals.list_deals(replace(query, cursor=cursor, size=PAGE)))


def audit_rows(query: audit.AuditQuery) -> AsyncIterator[dict[str, Any]]:
    return pages(lambda cursor: audit.list_entries(replace(query, cursor=cursor, size=PAGE)))


async def task_rows(user_id: int, view: str) -> AsyncIterator[dict[str, Any]]:
    """One view of the user's tasks; one past the cap is enough to refuse an export."""
    cap = row_cap()
    limit = cap + 1 if cap is not None else UNLIMITED_TASKS
    for row in await tasks.my_tasks(user_id, view, limit=limit):
        yield row


def _phone(row: dict[str, Any]) -> str:
    phone = row.get("phone")
    return format_phone(phone, get_runtime().settings.default_region) if phone else ""


def _amount(row: dict[str, Any]) -> Decimal | None:
    amount = row.get("amount_minor")
    return None if amount is None else Decimal(amount) / 100


def client_columns() -> list[Column]:
    kinds = {"company": _("Company"), "person": _("Private person")}
    return [
        Column("id", "ID"),
        Column("name", _("Name")),
        Column("kind", _("Type"), value=lambda r: kinds.get(r["kind"], r["kind"])),
        Column("inn", _("INN"), field="client.inn"),
        Column("phone", _("Phone"), field="client.phones", value=_phone),
        Column("email", _("E-mail"), field="client.emails"),
        Column("source", _("Source")),
        Column("responsible_name", _("Manager")),
        Column("last_activity_at", _("Last activity")),
        Column("created_at", _("Created")),
    ]


def status_labels() -> dict[str, str]:
    return {"open": _("Open"), "won": _("Won"), "lost": _("Lost")}


def deal_columns() -> list[Column]:
    statuses = status_labels()
    return [
        Column("id", "ID"),
        Column("title", _("Deal")),
        Column("client_name", _("Client")),
        Column("pipeline_name", _("Pipeline")),
        Column("stage_name", _("Stage")),
        Column("stage_outcome", _("Status"), value=lambda r: statuses.get(r["stage_outcome"])),
        Column("amount_minor", _("Amount"), field="deal.amount", value=_amount),
        Column("currency", _("Currency"), field="deal.amount"),
        Column("expected_close", _("Expected close")),
        Column("closed_at", _("Closed")),
        Column("responsible_name", _("Manager")),
        Column("created_at", _("Created")),
    ]


def task_columns() -> list[Column]:
    priorities = tasks.priority_labels()
    return [
        Column("id", "ID"),
        Column("title", _("Task")),
        Column("due_at", _("Due")),
        Column("priority", _("Priority"), value=lambda r: priorities.get(r["priority"])),
        Column("client_name", _("Client")),
        Column("deal_title", _("Deal")),
        Column("assignee_name", _("Assignee")),
        Column("done_at", _("Done")),
    ]


def audit_columns() -> list[Column]:
    return [
        Column("id", "ID"),
        Column("occurred_at", _("Time")),
        Column("actor_name", _("User")),
        Column("action", _("Action")),
        Column("object_type", _("Object type")),
        Column("object_id", _("Object id")),
        Column("summary", _("Summary")),
        Column("changes", _("Changes")),
        Column("ip", _("IP address")),
        Column("flagged", _("Flagged")),
    ]
