"""Field validation shared by the web forms, the JSON API and imports.

Every check returns the normalised value or raises `FieldError`; `Form` gathers the
errors of a whole form so the user sees all of them at once, next to each field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import date, datetime
from functools import lru_cache
from typing import Any, TypeVar

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from core.i18n import _

T = TypeVar("T")


class FieldError(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationError(Exception):
    """A set of field errors; nothing was written."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


class Form:
    """Collects cleaned values and per-field errors for one submission."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.cleaned: dict[str, Any] = {}
        self.errors: dict[str, str] = {}

    def field(self, name: str, *checks: Callable[[Any], Any], default: Any = "") -> Any:
        value = self.data.get(name, default)
        try:
            for check in checks:
                value = check(value)
        except FieldError as exc:
            self.errors[name] = exc.message
            return None
        self.cleaned[name] = value
        return value

    def error(self, name: str, message: str) -> None:
        self.errors.setdefault(name, message)

    def raise_if_invalid(self) -> None:
        if self.errors:
            raise ValidationError(self.errors)


def text(max_length: int, required: bool = False) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        value = "" if value is None else str(value).strip()
        if required and not value:
            raise FieldError(_("This field is required."))
        if len(value) > max_length:
            raise FieldError(_("At most %(n)s characters.", n=max_length))
        return value

    return check


def choice(options: Iterable[str]) -> Callable[[Any], str]:
    allowed = list(options)

    def check(value: Any) -> str:
        if value not in allowed:
            raise FieldError(_("Choose one of the offered values."))
        return str(value)

    return check


def integer(minimum: int | None = None, required: bool = True) -> Callable[[Any], int | None]:
    def check(value: Any) -> int | None:
        if value in (None, ""):
            if required:
                raise FieldError(_("This field is required."))
            return None
        try:
            number = int(str(value).strip())
        except ValueError:
            raise FieldError(_("Enter a whole number.")) from None
        if minimum is not None and number < minimum:
            raise FieldError(_("Must be at least %(n)s.", n=minimum))
        return number

    return check


def money_minor(value: Any) -> int:
    """'1 234,50' or '1234.5' -> 123450 (minor units)."""
    raw = "" if value is None else str(value)
    cleaned = re.sub(r"[\s\u00a0']", "", raw).replace(",", ".")
    if not cleaned:
        return 0
    if not re.fullmatch(r"\d{1,13}(\.\d{1,2})?", cleaned):
        raise FieldError(_("Enter an amount like 1500 or 1500.50."))
    whole, _sep, fraction = cleaned.partition(".")
    return int(whole) * 100 + int((fraction + "00")[:2])


def optional_date(value: Any) -> date | None:
    if value in (None, ""):
        return None
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise FieldError(_("Enter a date as YYYY-MM-DD.")) from None


def required_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value).strip())
    except ValueError:
        raise FieldError(_("Enter a date and time.")) from None


# --- INN / KPP --------------------------------------------------------------------

_INN10 = (2, 4, 10, 3, 5, 9, 4, 6, 8)
_INN12_A = (7, 2, 4, 10, 3, 5, 9, 4, 6, 8)
_INN12_B = (3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8)


def _check_digit(digits: list[int], weights: tuple[int, ...]) -> int:
    return sum(d * w for d, w in zip(digits, weights, strict=False)) % 11 % 10


def is_valid_inn(inn: str) -> bool:
    """Russian taxpayer number: 10 digits (organisation) or 12 (person), check digits."""
    if not inn.isdigit() or len(inn) not in (10, 12):
        return False
    digits = [int(c) for c in inn]
    if len(inn) == 10:
        return _check_digit(digits, _INN10) == digits[9]
    return (
        _check_digit(digits, _INN12_A) == digits[10]
        and _check_digit(digits, _INN12_B) == digits[11]
    )


def inn(value: Any) -> str:
    value = re.sub(r"\s", "", str(value or ""))
    if value and not is_valid_inn(value):
        raise FieldError(_("INN must be 10 or 12 digits with valid check digits."))
    return value


def kpp(value: Any) -> str:
    value = re.sub(r"\s", "", str(value or "")).upper()
    if value and not re.fullmatch(r"\d{4}[\dA-Z]{2}\d{3}", value):
        raise FieldError(_("KPP must be 9 characters: 4 digits, 2 digits or letters, 3 digits."))
    return value


# --- phones and e-mails -------------------------------------------------------------


@lru_cache(maxsize=4096)
def normalize_phone(value: str, region: str) -> str:
    """Any human spelling ('8 (912) 345-67-89') -> E.164 ('+79123456789').

    Memoised (a failure raises, so is not kept): search as you type asks for the same
    spellings again and again, and parsing one takes ~70 µs."""
    raw = value.strip()
    if not raw:
        raise FieldError(_("Enter a phone number."))
    if len(raw) > 40:
        raise FieldError(_("At most %(n)s characters.", n=40))
    try:
        parsed = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        raise FieldError(_("%(value)s is not a phone number.", value=raw)) from None
    if not phonenumbers.is_valid_number(parsed):
        raise FieldError(_("%(value)s is not a valid phone number.", value=raw))
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def try_normalize_phone(value: str, region: str) -> str | None:
    try:
        return normalize_phone(value, region)
    except FieldError:
        return None


@lru_cache(maxsize=4096)
def format_phone(e164: str, region: str) -> str:
    """National format for numbers of the install's region, international otherwise.

    Memoised: parsing a number takes ~100 µs, and pages show the same numbers all day."""
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    if phonenumbers.region_code_for_number(parsed) == region:
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def normalize_email(value: str) -> str:
    raw = value.strip()
    if len(raw) > 254:
        raise FieldError(_("At most %(n)s characters.", n=254))
    try:
        result = validate_email(raw, check_deliverability=False)
    except EmailNotValidError:
        raise FieldError(_("%(value)s is not a valid e-mail address.", value=raw)) from None
    return result.normalized.lower()


def phones(region: str, limit: int = 10) -> Callable[[Any], list[str]]:
    return _many(lambda v: normalize_phone(v, region), limit)


def emails(limit: int = 10) -> Callable[[Any], list[str]]:
    return _many(normalize_email, limit)


def _many(normalize: Callable[[str], str], limit: int) -> Callable[[Any], list[str]]:
    """A list (or newline/comma separated text) of values, normalised, duplicates dropped."""

    def check(value: Any) -> list[str]:
        items = value if isinstance(value, list) else re.split(r"[\n,;]+", str(value or ""))
        result: list[str] = []
        for item in items:
            if str(item).strip():
                normalized = normalize(str(item))
                if normalized not in result:
                    result.append(normalized)
        if len(result) > limit:
            raise FieldError(_("At most %(n)s values.", n=limit))
        return result

    return check


def tags(value: Any) -> list[str]:
    items = value if isinstance(value, list) else str(value or "").split(",")
    result: list[str] = []
    for item in items:
        tag = str(item).strip().lower()
        if not tag:
            continue
        if len(tag) > 64:
            raise FieldError(_("A tag is at most %(n)s characters.", n=64))
        if tag not in result:
            result.append(tag)
    if len(result) > 20:
        raise FieldError(_("At most %(n)s values.", n=20))
    return result
