"""Artifacts as HTML, treating each as hostile: whatever a run wrote, the page that shows it
runs no script of its, loads nothing from elsewhere and links only to http(s)/mailto.

Markdown goes through markdown-it-py with raw HTML turned off (``<script>`` and any other tag
come out as text) and then through nh3 (Ammonia) with an allowlist of tags and attributes and
of URL schemes - two locks, from two well-kept libraries, so that a gap in one is not a hole.
Tables and links are built with Django's ``format_html``: every value escaped.

What is rendered is bounded, so that every page that shows artifacts (the admin's, the API's
``html``, the dashboard) stays fast whatever a run attached: markdown up to
:data:`MAX_MARKDOWN_CHARS` (600 KB of markdown tables took seconds to render, on every view),
tables up to :data:`MAX_ROWS` rows of :data:`MAX_COLUMNS` cells of :data:`MAX_CELL_CHARS`
characters. The rest is left out with a note that says so; the artifact's ``data`` (in the
API) keeps all of it.
"""

from __future__ import annotations

import functools
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

#: Characters of markdown rendered: 30 ms of a markdown table, 0.1 s of the slowest text
#: found (10,000 "["), on a busy two-core machine.
MAX_MARKDOWN_CHARS = 10_000
#: Rows, cells per row and characters per cell of a table rendered (40 ms at most).
MAX_ROWS = 200
MAX_COLUMNS = 50
MAX_CELL_CHARS = 200


def render_markdown(text: str) -> SafeString:
    shown, note = text, ""
    if len(text) > MAX_MARKDOWN_CHARS:
        # At a line's end when there is one near: a table or a paragraph is not cut midway.
        end = text.rfind("\n", MAX_MARKDOWN_CHARS // 2, MAX_MARKDOWN_CHARS)
        shown = text[: end if end > 0 else MAX_MARKDOWN_CHARS]
        note = f"the first {len(shown):,} of {len(text):,} characters"
    return format_html("{}{}", mark_safe(_clean_html(shown)), _cut_note(note))


@functools.lru_cache(maxsize=64)
def _clean_html(markdown: str) -> str:
    """Markdown rendered and sanitized; the latest few kept by their text (an artifact never
    changes: the dashboard and the API's lists show the same ones again and again)."""
    html = _markdown.render(markdown)
    return nh3.clean(html, tags=TAGS, attributes=ATTRIBUTES, url_schemes=SCHEMES, link_rel=REL)


def render_table(data: dict[str, Any]) -> SafeString:
    """A table artifact: its columns as the header (when it has some), its rows below."""
    columns = [str(c) for c in _listed(data.get("columns"))]
    rows = [row if isinstance(row, list) else [row] for row in _listed(data.get("rows"))]
    widest = max([len(columns), *(len(row) for row in rows[:MAX_ROWS])])
    cells = (
        format_html_join("", "<td>{}</td>", ((_cell(v),) for v in row[:MAX_COLUMNS]))
        for row in rows[:MAX_ROWS]
    )
    lines = format_html_join("", "<tr>{}</tr>", ((line,) for line in cells))
    cuts = [f"the first {MAX_ROWS:,} of {len(rows):,} rows"] if len(rows) > MAX_ROWS else []
    if widest > MAX_COLUMNS:
        cuts.append(f"the first {MAX_COLUMNS} of {widest:,} columns")
    note = _cut_note(" and ".join(cuts))
    if not columns:
        return format_html("<table><tbody>{}</tbody></table>{}", lines, note)
    header = format_html_join("", "<th>{}</th>", ((_cell(c),) for c in columns[:MAX_COLUMNS]))
    return format_html(
        "<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>{}", header, lines, note
    )


def _listed(value: object) -> list[Any]:
    """A table's columns or rows as a list, whatever SQL or older code wrote: nothing when
    missing, a lone value (a number, a string, an object) as a list of that one value."""
    if value is None or value == "":
        return []
    return value if isinstance(value, list) else [value]


def _cell(value: object) -> str:
    text = "" if value is None else value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= MAX_CELL_CHARS else f"{text[:MAX_CELL_CHARS]}…"


def _cut_note(what: str) -> SafeString:
    """The note under an artifact shown in part (nothing when it is shown whole)."""
    if not what:
        return mark_safe("")
    return format_html(
        '<p class="djt-cut"><em>Shown: {}. The artifact\'s data (in the API) holds it all.</em>'
        "</p>",
        what,
    )


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
    text = json.dumps(data, indent=2)  # stored otherwise (in SQL): as text, cut
    return format_html("<pre>{}</pre>", text[:MAX_MARKDOWN_CHARS])
