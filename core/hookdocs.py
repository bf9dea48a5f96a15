"""Renders the hook reference of docs/plugins.md from core/hookspecs.py.

`python -m core.hookdocs` rewrites the section between the markers; a test fails
when the committed file and the specs disagree, so the docs cannot go stale.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

from core import hookspecs

DOC = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
START, END = "<!-- hook-reference:start -->", "<!-- hook-reference:end -->"


def hook_functions() -> list[tuple[str, object]]:
    return [
        (name, fn)
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(fn, "kartoteka_spec")
    ]


def render_reference() -> str:
    parts = []
    for name, fn in sorted(hook_functions(), key=lambda item: inspect.getsourcelines(item[1])[1]):  # type: ignore[arg-type]
        signature = str(inspect.signature(fn)).replace("'", "")  # type: ignore[arg-type]
        parts.append(f"### `{name}{signature}`\n\n```text\n{inspect.getdoc(fn)}\n```\n")
    return "\n".join(parts)


def updated_document(text: str) -> str:
    head, rest = text.split(START, 1)
    _old, tail = rest.split(END, 1)
    return f"{head}{START}\n\n{render_reference()}\n{END}{tail}"


def main() -> int:
    DOC.write_text(updated_document(DOC.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
