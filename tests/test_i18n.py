"""The Russian catalog is complete and consistent with the source tree.

The messages are re-extracted exactly as ``make i18n`` does (the ``pybabel extract``
command is read from the Makefile), so a string added anywhere in ``core`` or
``themes`` (or a plugin's folder, against its own catalog) without a Russian
translation fails here, with the list of what is missing.
"""

from __future__ import annotations

import re
import shlex
from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.frontend import CommandLineInterface
from babel.messages.pofile import read_po

from core import i18n

ROOT = Path(__file__).resolve().parent.parent
CORE_SOURCES = ("core", "themes")
# The core's catalog, then one per in-repo plugin (its own folder's strings).
CATALOGS = {
    "core": (ROOT / "core" / "locale", CORE_SOURCES),
    **{
        folder.name: (folder / "locale", (f"plugins/{folder.name}",))
        for folder in sorted((ROOT / "plugins").iterdir())
        if (folder / "__init__.py").exists()
    },
}
HOW_TO_FIX = (
    "Run `make i18n`, then translate the new entries in {po} (msgstr must not be "
    "empty, no `#, fuzzy`; plural entries need all three msgstr[0..2])."
)
# What the Makefile runs, in case its `i18n` target cannot be read.
DEFAULT_EXTRACT = [
    "extract",
    "-F",
    "babel.cfg",
    "-o",
    "core/locale/messages.pot",
    "--no-location",
    "--omit-header",
    "core",
    "themes",
]
# %(name)s-style placeholders, positional ones (%s, %d...), %% and a stray %.
_PLACEHOLDER = re.compile(r"%(?:\((\w+)\))?[-#0 +]*\d*(?:\.\d+)?([diouxXeEfFgGcrsa%])|%")
# Templates mark translations safe (Jinja's new-style gettext wraps them in Markup),
# so a translation must not bring in characters that change the HTML around it.
_HTML_SENSITIVE = '"<>&'


def _makefile_extract_args() -> list[str]:
    for line in (ROOT / "Makefile").read_text("utf-8").splitlines():
        if "pybabel extract" in line:
            args = shlex.split(line.split("pybabel", 1)[1])
            return args if args and args[0] == "extract" else DEFAULT_EXTRACT
    return DEFAULT_EXTRACT


def _with_output(args: list[str], output: Path) -> list[str]:
    result: list[str] = []
    skip_next = False
    for arg in args:
        if skip_next:
            skip_next = False
            continue
        if arg in ("-o", "--output", "--output-file"):
            skip_next = True
            continue
        if arg.startswith(("--output=", "--output-file=")):
            continue
        result.append(arg)
    return [result[0], "-o", str(output), *result[1:]]


def _with_sources(args: list[str], sources: tuple[str, ...]) -> list[str]:
    """The core's extract command pointed at other source folders (a plugin's)."""
    return [*[arg for arg in args if arg not in CORE_SOURCES], *sources]


@pytest.fixture(scope="module", params=sorted(CATALOGS))
def catalog_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def extracted(catalog_name: str, tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    """The messages of the current source tree, extracted like `make i18n` does."""
    pot = tmp_path_factory.mktemp("i18n") / "messages.pot"
    sources = CATALOGS[catalog_name][1]
    args = _with_output(_with_sources(_makefile_extract_args(), sources), pot)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        CommandLineInterface().run(["pybabel", "--quiet", *args])
    with pot.open("rb") as fh:
        return read_po(fh)


@pytest.fixture(scope="module")
def russian(catalog_name: str) -> Catalog:
    po = CATALOGS[catalog_name][0] / "ru" / "LC_MESSAGES" / "messages.po"
    how_to_fix = HOW_TO_FIX.format(po=po.relative_to(ROOT))
    assert po.exists(), f"{po.relative_to(ROOT)} is missing. {how_to_fix}"
    with po.open("rb") as fh:
        return read_po(fh, locale="ru")


def _key(message: Message) -> str:
    return message.id if isinstance(message.id, str) else message.id[0]


def _forms(message: Message) -> list[str]:
    if isinstance(message.string, (list, tuple)):
        return list(message.string)
    return [message.string or ""]


def _translated(message: Message, nplurals: int) -> bool:
    forms = _forms(message)
    if message.pluralizable and len(forms) != nplurals:
        return False
    return not message.fuzzy and all(form.strip() for form in forms)


def _show(message_id: str | tuple[str, ...] | list[str]) -> str:
    return repr(message_id if isinstance(message_id, str) else tuple(message_id))


def test_every_message_has_a_russian_translation(
    catalog_name: str, extracted: Catalog, russian: Catalog
) -> None:
    least = 100 if catalog_name == "core" else 1
    assert len([m for m in extracted if m.id]) >= least, "the extraction found almost nothing"
    missing = []
    for message in extracted:
        if not message.id:
            continue
        entry = russian.get(message.id)
        if entry is None:
            missing.append(f"{_show(message.id)} (not in the .po file yet)")
        elif message.pluralizable and not entry.pluralizable:
            missing.append(f"{_show(message.id)} (the .po entry has no plural forms)")
        elif not _translated(entry, russian.num_plurals):
            missing.append(f"{_show(message.id)} (empty or fuzzy translation)")
    po = CATALOGS[catalog_name][0] / "ru" / "LC_MESSAGES" / "messages.po"
    assert not missing, (
        f"{len(missing)} message(s) without a Russian translation. "
        f"{HOW_TO_FIX.format(po=po.relative_to(ROOT))}\n  " + "\n  ".join(missing)
    )


def _placeholders(text: str) -> tuple[set[str], Counter[str]]:
    named: set[str] = set()
    other: Counter[str] = Counter()
    for match in _PLACEHOLDER.finditer(text):
        if match.group(1):
            named.add(match.group(1))
        else:
            other[match.group(0)] += 1
    return named, other


def test_translations_keep_the_placeholders(russian: Catalog) -> None:
    wrong = []
    for message in russian:
        if not message.id or not any(_forms(message)):
            continue
        ids = [message.id] if isinstance(message.id, str) else list(message.id)
        expected_named, expected_other = _placeholders(ids[-1])
        for msgid in ids[:-1]:
            named, other = _placeholders(msgid)
            expected_named |= named
            expected_other |= other
        for form in _forms(message):
            named, other = _placeholders(form)
            if named != expected_named or other != expected_other:
                wrong.append(
                    f"{_show(message.id)} -> {form!r}: expected "
                    f"{sorted(expected_named) or 'no named placeholders'}"
                    f"{', ' + str(dict(expected_other)) if expected_other else ''}"
                )
    assert not wrong, "Placeholders differ from the English source:\n  " + "\n  ".join(wrong)


def test_translations_add_no_html(russian: Catalog) -> None:
    """Translations are inserted unescaped into templates (in attributes too)."""
    wrong = []
    for message in russian:
        if not message.id:
            continue
        source = message.id if isinstance(message.id, str) else "".join(message.id)
        for form in _forms(message):
            added = [c for c in _HTML_SENSITIVE if form.count(c) > source.count(c)]
            if added:
                wrong.append(f"{_show(message.id)} -> {form!r} adds {''.join(added)}")
    assert not wrong, (
        "Use «» instead of ASCII quotes, and no markup the English has not:\n  "
        + "\n  ".join(wrong)
    )


def test_russian_plural_rule(russian: Catalog) -> None:
    assert russian.num_plurals == 3
    header = dict(russian.mime_headers)
    if "Plural-Forms" in header:  # `pybabel update --omit-header` drops the header
        assert header["Plural-Forms"].replace(" ", "") == (
            "nplurals=3;plural=(n%10==1&&n%100!=11?0:n%10>=2&&n%10<=4&&(n%100<10||n%100>=20)?1:2);"
        )
        assert "charset=utf-8" in header["Content-Type"].lower()


@pytest.fixture
def ru_locale() -> Iterator[None]:
    saved = dict(i18n._catalogs)
    i18n.load_catalogs(["ru", "en"], [])
    token = i18n.current_locale.set("ru")
    try:
        yield
    finally:
        i18n.current_locale.reset(token)
        i18n._catalogs.clear()
        i18n._catalogs.update(saved)


def test_gettext_in_russian(ru_locale: None) -> None:
    assert i18n.gettext("Clients") == "Клиенты"
    assert i18n._("Log in") == "Войти"
    assert i18n.gettext("At most %(n)s characters.", n=5) == "Не более 5 симв."
    assert str(i18n.lazy_gettext("Deals")) == "Сделки"
    assert i18n.gettext("A string nobody translated") == "A string nobody translated"
    plural = i18n._catalogs["ru"].plural  # type: ignore[attr-defined]
    forms = {1: 0, 2: 1, 5: 2, 11: 2, 12: 2, 21: 0, 22: 1, 25: 2, 101: 0, 111: 2}
    assert {n: plural(n) for n in forms} == forms


def test_formatting_in_russian(ru_locale: None) -> None:
    space = "[\u00a0\u202f ]"
    money = i18n.format_money(123450, "RUB")
    assert re.fullmatch(f"1{space}234,50{space}?₽", money), repr(money)
    number = i18n.format_number(1234567.5)
    assert re.fullmatch(f"1{space}234{space}567,5", number), repr(number)
    medium = i18n.format_date(date(2026, 3, 5))
    assert re.fullmatch(f"5 мар. 2026{space}г.", medium), repr(medium)
    assert i18n.format_date(date(2026, 3, 5), "short") == "05.03.2026"


def test_english_stays_english() -> None:
    saved = dict(i18n._catalogs)
    i18n.load_catalogs(["ru", "en"], [])
    token = i18n.current_locale.set("en")
    try:
        assert i18n.gettext("Clients") == "Clients"
        assert "1,234.50" in i18n.format_money(123450, "USD")
    finally:
        i18n.current_locale.reset(token)
        i18n._catalogs.clear()
        i18n._catalogs.update(saved)
