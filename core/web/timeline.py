"""Which template shows which timeline entry kind (core and plugin kinds alike)."""

from __future__ import annotations

from core.hooktypes import TimelineKind
from core.runtime import get_runtime

FALLBACK = TimelineKind(kind="*", template="core/timeline/simple.html", label="", icon="•")


def timeline_templates() -> dict[str, TimelineKind]:
    return {kind.kind: kind for kind in get_runtime().plugins.collect("timeline_kinds")}
