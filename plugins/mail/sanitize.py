"""Incoming HTML mail made safe to show: nh3 (the ammonia sanitiser) plus our policy.

Scripts, event handlers, forms and frames are removed by nh3's allow-list. Remote
images (tracking pixels) are dropped until the user asks for them; ``cid:`` images
point at the message's own attachments. The result is served in a sandboxed iframe
with its own Content-Security-Policy (``FRAME_CSP``), so even a sanitiser miss can
neither run script nor load anything from elsewhere, and its styles stay inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import nh3

ALLOWED_STYLES = {
    "color",
    "background-color",
    "font-weight",
    "font-style",
    "font-size",
    "font-family",
    "text-align",
    "text-decoration",
    "vertical-align",
    "width",
    "height",
    "margin",
    "padding",
    "border",
    "border-collapse",
    "line-height",
    "white-space",
}
EXTRA_ATTRIBUTES = {
    "*": {"style", "class", "align", "valign", "width", "height", "bgcolor", "color", "dir"},
    "font": {"face", "size"},
    "table": {"cellpadding", "cellspacing", "border"},
}
FRAME_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:{remote}; "
    "frame-ancestors 'self'; form-action 'none'; base-uri 'none'; "
    "sandbox allow-popups allow-popups-to-escape-sandbox"
)


@dataclass(frozen=True)
class SafeHtml:
    html: str
    blocked_images: int


def frame_csp(show_images: bool) -> str:
    return FRAME_CSP.format(remote=" https: http:" if show_images else "")


def _remote(url: str) -> bool:
    return url.lower().startswith(("http:", "https:", "//"))


def sanitize(html: str, message_id: int, show_images: bool = False) -> SafeHtml:
    """Clean HTML of a stored message; counts the remote images it held back."""
    blocked = 0

    def keep(tag: str, attribute: str, value: str) -> str | None:
        nonlocal blocked
        if tag == "img" and attribute == "src":
            if value.lower().startswith("cid:"):
                return f"/p/mail/messages/{message_id}/cid/{quote(value[4:].strip('<>'), safe='')}"
            if _remote(value) and not show_images:
                blocked += 1
                return None
        if attribute == "background":  # a remote picture by another name
            return None
        return value

    attributes = {tag: set(names) for tag, names in nh3.ALLOWED_ATTRIBUTES.items()}
    for tag, names in EXTRA_ATTRIBUTES.items():
        attributes.setdefault(tag, set()).update(names)
    tags = set(nh3.ALLOWED_TAGS) | {"font", "center"}
    cleaned = nh3.clean(
        html,
        tags=tags,
        attributes=attributes,
        attribute_filter=keep,
        filter_style_properties=ALLOWED_STYLES,
        url_schemes={"http", "https", "mailto", "cid", "tel"},
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
    )
    return SafeHtml(html=cleaned, blocked_images=blocked)


def frame_document(body: str) -> str:
    """The iframe's whole document: the sanitised body with a neutral base style."""
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<style>body{font-family:sans-serif;font-size:14px;margin:8px;word-wrap:break-word}"
        "img{max-width:100%;height:auto}</style></head><body>" + body + "</body></html>"
    )
