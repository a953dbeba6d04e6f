"""Breadcrumbs as the running Django's admin draws them.

Django 6 draws them as ``<ol class="breadcrumbs">`` inside a ``<nav>`` and styles only that;
Django 5.2 as ``<div class="breadcrumbs">`` with an angle quote between the links. A page that wrote
either by hand looked unstyled on the other.
"""

from __future__ import annotations

import django
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

__all__ = ["breadcrumbs"]


def breadcrumbs(*links: tuple[str, str], current: str) -> SafeString:
    """``links`` are (url, text); ``current`` the page's own name (not a link)."""
    if django.VERSION >= (6, 0):
        # Whitespace between the items, as Django's own template has: its separator needs it.
        items = format_html_join("\n", '<li><a href="{}">{}</a></li>', links)
        return format_html(
            '<ol class="breadcrumbs">{}\n<li aria-current="page">{}</li></ol>', items, current
        )
    items = format_html_join("", '<a href="{}">{}</a> &rsaquo; ', links)
    return format_html('<div class="breadcrumbs">{}{}</div>', items, current)
