"""Building HTML safely: every string is escaped unless it is already `Markup` made by these helpers.

Model output is hostile (a transcript may hold `<script>`), so pages are never built by pasting strings:
text goes through `el`, which escapes it, and only what `el` and the highlighter return counts as HTML.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

Child = Any  # str (escaped), Markup (kept), None/False (dropped), numbers (str()), or an iterable of these


class Markup(str):
    """A string that is already safe HTML."""


VOID_TAGS = frozenset({"br", "hr", "img", "input", "link", "meta"})


def escape(value: Any) -> Markup:
    return value if isinstance(value, Markup) else Markup(html.escape(str(value), quote=True))


def render(children: Child) -> Markup:
    """Children as HTML: text escaped, markup kept, nested iterables flattened, None and False dropped."""
    if children is None or children is False:
        return Markup("")
    if isinstance(children, str):
        return escape(children)
    if isinstance(children, Iterable):
        return Markup("".join(render(c) for c in children))
    return escape(children)


def el(tag: str, *children: Child, **attrs: Any) -> Markup:
    """`<tag attrs>children</tag>`; `class_` becomes `class`, `data_x` becomes `data-x`; None/False drop out."""
    parts = [tag]
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        name = key.rstrip("_").replace("_", "-")
        parts.append(name if value is True else f'{name}="{escape(value)}"')
    opening = f"<{' '.join(parts)}>"
    if tag in VOID_TAGS:
        return Markup(opening)
    return Markup(f"{opening}{render(children)}</{tag}>")


def link(href: str, *children: Child, **attrs: Any) -> Markup:
    return el("a", *children, href=href, **attrs)


def segment(value: Any) -> str:
    """One URL path segment: run names and task ids may hold any character."""
    return quote(str(value), safe="")


def with_query(path: str, params: Mapping[str, Any]) -> str:
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return f"{path}?{urlencode(kept)}" if kept else path


def table(headers: Iterable[Child], rows: Iterable[Iterable[Child]], **attrs: Any) -> Markup:
    """A table in a box of its own that scrolls sideways when the table is wider than the page: every column
    stays reachable, and the page itself never scrolls sideways."""
    head = el("thead", el("tr", [el("th", h) for h in headers]))
    body = el("tbody", [el("tr", [el("td", cell) for cell in row]) for row in rows])
    return el("div", el("table", head, body, **attrs), class_="wide")


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def dollars(value: float | None) -> str:
    return "–" if value is None else f"${value:.4f}"


def moment(iso: str | None) -> str:
    """An ISO 8601 time as `2026-01-01 12:00 UTC`; anything else as written."""
    if not iso:
        return "–"
    try:
        stamp = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    return stamp.strftime("%Y-%m-%d %H:%M") + (" UTC" if stamp.utcoffset() == timedelta(0) else "")


def verdict(correct: bool | None) -> Markup:
    if correct is None:
        return el("span", "–")
    return el("span", "✓ right" if correct else "✗ wrong", class_="ok" if correct else "bad")


def pager(path: str, params: Mapping[str, Any], page: int, pages: int) -> Markup:
    """Previous/next links that keep the page's other query parameters (filter, sort)."""
    if pages <= 1:
        return Markup("")
    def to(number: int) -> str:
        return with_query(path, {**params, "page": number if number > 1 else None})

    return el(
        "nav",
        link(to(page - 1), "← previous", rel="prev") if page > 1 else el("span", "← previous", class_="muted"),
        el("span", f" page {page} of {pages} "),
        link(to(page + 1), "next →", rel="next") if page < pages else el("span", "next →", class_="muted"),
        class_="pager",
    )


def page_slice(items: list[Any], page: int, size: int) -> tuple[list[Any], int, int]:
    """The items of a 1-based page (clamped into range), that page's number, and the page count."""
    pages = max(1, -(-len(items) // size))
    page = min(max(page, 1), pages)
    return items[(page - 1) * size : page * size], page, pages


REFRESH_S = 10  # a page of a run still training loads itself again this often


def layout(title: str, crumbs: Iterable[tuple[str | None, str]], *body: Child, live: bool = False) -> Markup:
    """A whole page: the breadcrumb trail (href None for the current page), then the body. A `live` page (of a run
    still training) reloads itself every REFRESH_S seconds: a meta refresh, since the viewer runs no script."""
    trail = [link(href, label) if href else el("span", label) for href, label in crumbs]
    nav = el("nav", joined(trail, " / "), class_="crumbs")
    return Markup("<!doctype html>" + el(
        "html",
        el("head", el("meta", charset="utf-8"), el("meta", name="viewport", content="width=device-width"),
           el("meta", http_equiv="refresh", content=str(REFRESH_S)) if live else None,
           el("title", f"{title} · agenttrain view"), el("link", rel="stylesheet", href="/static/style.css"),
           el("link", rel="stylesheet", href="/static/highlight.css")),
        el("body", el("header", nav), el("main", el("h1", title), *body)),
        lang="en",
    ))


def joined(items: list[Markup], separator: str) -> list[Markup]:
    """The items with a muted separator between each two."""
    out: list[Markup] = []
    for i, item in enumerate(items):
        if i:
            out.append(el("span", separator, class_="sep"))
        out.append(item)
    return out
