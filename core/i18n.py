"""Translations and locale-aware formatting.

Source strings are English; catalogs are ``locale/<lang>/LC_MESSAGES/messages.po``
in the core and in each plugin folder. The .po files are compiled in memory at
start-up, so there is no build step and no stale .mo file to forget.
The locale of the current request lives in a context variable.
"""

from __future__ import annotations

import contextvars
import io
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import cast
from zoneinfo import ZoneInfo

from babel import Locale, dates, numbers
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import LazyProxy, NullTranslations, Translations

CORE_LOCALE_DIR = Path(__file__).parent / "locale"
LANGUAGE_NAMES = {"ru": "Русский", "en": "English"}

current_locale: contextvars.ContextVar[str] = contextvars.ContextVar(
    "kartoteka_locale", default="en"
)
current_timezone: contextvars.ContextVar[str] = contextvars.ContextVar(
    "kartoteka_timezone", default="UTC"
)
_catalogs: dict[str, NullTranslations] = {}


def _compile(po_path: Path, locale: str) -> Translations:
    with po_path.open("rb") as fh:
        catalog = read_po(fh, locale=locale)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(fp=buffer)


def load_catalogs(languages: Iterable[str], locale_dirs: Iterable[Path]) -> None:
    """(Re)build the catalogs: core first, plugins merged on top."""
    dirs = [CORE_LOCALE_DIR, *locale_dirs]
    _catalogs.clear()
    for language in languages:
        merged: NullTranslations | None = None
        for directory in dirs:
            po_path = directory / language / "LC_MESSAGES" / "messages.po"
            if not po_path.exists():
                continue
            translations = _compile(po_path, language)
            if merged is None:
                merged = translations
            else:
                merged.merge(translations)  # type: ignore[attr-defined]
        _catalogs[language] = merged or NullTranslations()


def _translations() -> NullTranslations:
    return _catalogs.get(current_locale.get()) or NullTranslations()


def gettext(message: str, **variables: object) -> str:
    text = _translations().gettext(message)
    return text % variables if variables else text


def ngettext(singular: str, plural: str, n: int, **variables: object) -> str:
    text = _translations().ngettext(singular, plural, n)
    return text % {"num": n, **variables}


def lazy_gettext(message: str) -> str:
    """For strings defined at import time and translated when shown.

    A `LazyProxy`, typed as the ``str`` it stands in for wherever one is expected (hook
    types' labels, templates). Modules import it as ``_l``; `make i18n` extracts both.
    """
    return cast(str, LazyProxy(gettext, message, enable_cache=False))


_ = gettext


# --- formatting ------------------------------------------------------------------


@lru_cache(maxsize=32)
def _parsed_locale(code: str) -> Locale:
    return Locale.parse(code)


def _locale() -> Locale:
    # Parsed once per language: a board formats a few hundred amounts and dates.
    return _parsed_locale(current_locale.get())


def to_local(value: datetime) -> datetime:
    return value.astimezone(ZoneInfo(current_timezone.get()))


def format_datetime(value: datetime | None, format: str = "short") -> str:
    if value is None:
        return ""
    return _formatted_datetime(value, format, current_locale.get(), current_timezone.get())


@lru_cache(maxsize=4096)
def _formatted_datetime(value: datetime, format: str, locale: str, zone: str) -> str:
    """Memoised: Babel takes ~20 µs a date, and lists show the same moments on every visit."""
    local = value.astimezone(ZoneInfo(zone))
    return dates.format_datetime(local, format=format, locale=_parsed_locale(locale))


def format_date(value: date | datetime | None, format: str = "medium") -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        value = to_local(value).date()
    return _formatted_date(value, format, current_locale.get())


@lru_cache(maxsize=4096)
def _formatted_date(value: date, format: str, locale: str) -> str:
    """Memoised: a board shows a hundred expected close dates, mostly the same few."""
    return dates.format_date(value, format=format, locale=_parsed_locale(locale))


def format_time(value: datetime | None) -> str:
    if value is None:
        return ""
    return dates.format_time(to_local(value), format="short", locale=_locale())


def format_number(value: int | float | Decimal) -> str:
    return numbers.format_decimal(value, locale=_locale())


HIDDEN_VALUE = "•••"
"""Shown in place of a value the user's role may not see."""


def format_money(amount_minor: int | None, currency: str) -> str:
    if amount_minor is None:
        return HIDDEN_VALUE
    return _formatted_money(amount_minor, currency, current_locale.get())


@lru_cache(maxsize=4096)
def _formatted_money(amount_minor: int, currency: str, locale: str) -> str:
    """Memoised: Babel takes ~60 µs an amount, and boards and cards repeat theirs."""
    amount = Decimal(amount_minor) / 100
    return numbers.format_currency(amount, currency, locale=_parsed_locale(locale))


def format_timedelta_from_now(value: datetime, now: datetime) -> str:
    return dates.format_timedelta(value - now, add_direction=True, locale=_locale())
