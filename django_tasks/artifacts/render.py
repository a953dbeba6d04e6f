"""Artifacts as HTML, treating each as hostile: whatever a run wrote, the page that shows it
runs no script of its, loads nothing from elsewhere and links only to http(s)/mailto.

Markdown goes through markdown-it-py with raw HTML turned off (``<script>`` and any other tag
come out as text) and then through nh3 (Ammonia) with an allowlist of tags and attributes and
of URL schemes - two locks, from two well-kept libraries, so that a gap in one is not a hole.
Tables and links are built with Django's ``format_html``: every value escaped.
"""

from __future__ import annotations

import json
from typing import Any

import nh3
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

from .create import LINK_SCHEMES

__all__ = ["render_artifact", "render_link", "render_markdown", "render_table"]

_markdown = MarkdownIt("commonmark", {"html": False}).enable("table").enable("strikethrough")

TAGS = {
    "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
    "li", "ol", "p", "pre", "s", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
}  # fmt: skip
ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}
SCHEMES = {"http", "https", "mailto"}
REL = "noopener noreferrer nofollow"


def render_markdown(text: str) -> SafeString:
    html = _markdown.render(text)
    clean = nh3.clean(html, tags=TAGS, attributes=ATTRIBUTES, url_schemes=SCHEMES, link_rel=REL)
    return mark_safe(clean)


def render_table(data: dict[str, Any]) -> SafeString:
    """A table artifact: its columns as the header (when it has some), its rows below."""
    columns = [str(c) for c in data.get("columns") or []]
    rows = [row if isinstance(row, list) else [row] for row in data.get("rows") or []]
    cells = (format_html_join("", "<td>{}</td>", ((_shown(v),) for v in row)) for row in rows)
    lines = format_html_join("", "<tr>{}</tr>", ((line,) for line in cells))
    if not columns:
        return format_html("<table><tbody>{}</tbody></table>", lines)
    header = format_html_join("", "<th>{}</th>", ((c,) for c in columns))
    return format_html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", header, lines)


def _shown(value: object) -> str:
    return "" if value is None else value if isinstance(value, str) else json.dumps(value)


def render_link(data: object) -> SafeString:
    url = data.get("url") if isinstance(data, dict) else None
    text = data.get("text") if isinstance(data, dict) else None
    if not isinstance(url, str) or not url.strip().lower().startswith(LINK_SCHEMES):
        return format_html("<code>{}</code>", json.dumps(data))  # stored otherwise: as text
    return format_html('<a href="{}" rel="{}">{}</a>', url.strip(), REL, text or url)


def render_artifact(kind: str, data: object) -> SafeString:
    """One artifact's content as HTML, whatever the row holds."""
    if kind == "markdown" and isinstance(data, str):
        return render_markdown(data)
    if kind == "table" and isinstance(data, dict):
        return render_table(data)
    if kind == "link":
        return render_link(data)
    return format_html("<pre>{}</pre>", json.dumps(data, indent=2))
