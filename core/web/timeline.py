"""Timeline entries on pages: which template shows which entry kind (core and plugin
kinds alike), and each entry's HTML.

An entry never changes once written, so its HTML is kept, per language and time zone,
for the next page that shows it: a card shows 30 entries and is opened again and
again, and rendering them was half the card's template time.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Any

from jinja2 import pass_context
from jinja2.runtime import Context
from markupsafe import Markup

from core.hooktypes import TimelineKind
from core.i18n import current_locale, current_timezone
from core.runtime import get_runtime

FALLBACK = TimelineKind(kind="*", template="core/timeline/simple.html", label="", icon="•")
ENTRY_TEMPLATE = "core/timeline/_entry.html"
KEPT_ENTRIES = 10_000
"""About 4 MB of HTML per web process."""

_kept: OrderedDict[tuple[Any, ...], Markup] = OrderedDict()


_kinds: weakref.WeakKeyDictionary[Any, dict[str, dict[str, TimelineKind]]]
_kinds = weakref.WeakKeyDictionary()


def timeline_templates() -> dict[str, TimelineKind]:
    """Entry kind to its `TimelineKind`, asked of the plugins once per language (the
    hook's contract: the same list each time, labels translated)."""
    per_language = _kinds.setdefault(get_runtime().plugins.pm, {})
    locale = current_locale.get()
    kinds = per_language.get(locale)
    if kinds is None:
        collected = get_runtime().plugins.collect("timeline_kinds")
        kinds = per_language[locale] = {kind.kind: kind for kind in collected}
    return kinds


@pass_context
def timeline_entry(context: Context, entry: dict[str, Any]) -> Markup:
    """The ``<li>`` of one entry: its kind's template, time and author.

    The kind's template sees ``entry`` and ``timeline_templates`` only, so its output
    depends on nothing else. Kept under the row's `render_key` (every stored column,
    see `core.services.timeline.page`), so a hit is the same HTML by construction.
    """
    kinds = context.get("timeline_templates") or timeline_templates()
    kind = kinds.get(entry["kind"]) or FALLBACK
    stored = entry.get("render_key")
    key = (stored, kind.template, kind.icon, current_locale.get(), current_timezone.get())
    if stored is not None and (html := _kept.get(key)) is not None:
        _kept.move_to_end(key)
        return html
    template = context.environment.get_template(ENTRY_TEMPLATE)
    html = Markup(template.render(entry=entry, kind=kind, timeline_templates=kinds))
    if stored is not None:
        _kept[key] = html
        if len(_kept) > KEPT_ENTRIES:
            _kept.popitem(last=False)
    return html
