"""The runs list: one row per run, sortable by any column, filtered by name and status."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from agenttrain.viewer.html import (
    Markup,
    dollars,
    el,
    layout,
    link,
    moment,
    page_slice,
    pager,
    percent,
    segment,
    with_query,
)
from agenttrain.viewer.site import RunRow, Site

PAGE_SIZE = 50
# column label -> (query key, sort key); None sorts last whichever the direction
COLUMNS: list[tuple[str, str, Callable[[RunRow], Any]]] = [
    ("run", "name", lambda r: r.name),
    ("status", "status", lambda r: r.summary.status),
    ("task", "task", lambda r: r.task),
    ("agent", "agent", lambda r: r.agent),
    ("epochs", "epochs", lambda r: r.summary.last_epoch),  # epochs run after the baseline, as "ran N epochs" says
    ("best train", "best", lambda r: r.summary.best_train_accuracy),
    ("test (95% CI)", "test", lambda r: r.summary.test_accuracy),
    ("cost", "cost", lambda r: r.summary.cost_usd),
    ("started", "started", lambda r: r.summary.started),
]


def _sorted(rows: list[RunRow], key: str, descending: bool) -> list[RunRow]:
    getter = next((g for _, k, g in COLUMNS if k == key), COLUMNS[-1][2])
    present = sorted((r for r in rows if getter(r) is not None), key=getter, reverse=descending)
    return present + [r for r in rows if getter(r) is None]


def _filtered(rows: list[RunRow], text: str, status: str) -> list[RunRow]:
    return [r for r in rows if text.lower() in r.name.lower() and (not status or r.summary.status == status)]


def _header(label: str, key: str, query: Mapping[str, str]) -> Markup:
    """A column title that sorts by it; clicking the sorted column again reverses the order."""
    current, descending = query.get("sort", "started"), query.get("order", "desc") == "desc"
    order = "asc" if key == current and descending else "desc"
    arrow = (" ↓" if descending else " ↑") if key == current else ""
    return link(with_query("/", {**query, "sort": key, "order": order, "page": None}), label + arrow)


def _cells(row: RunRow) -> list[Any]:
    s = row.summary
    best = f"{percent(s.best_train_accuracy)} @{s.best_epoch}" if s.best_epoch is not None else "–"
    test = percent(s.test_accuracy)
    if row.test_ci95:
        test += f" ({percent(row.test_ci95[0])} – {percent(row.test_ci95[1])})"
    if s.test_epoch is not None and s.test_epoch != s.best_epoch:
        test += f" @{s.test_epoch}"
    name = link(f"/runs/{segment(row.name)}/", row.name) if s.error is None else el("span", row.name, title=s.error)
    return [name, el("span", s.status or "?", class_=f"status {s.status}"), row.task or "–", row.agent or "–",
            "–" if s.last_epoch is None else s.last_epoch, best, test, dollars(s.cost_usd), moment(s.started)]


def _filter_form(query: Mapping[str, str], statuses: list[str]) -> Markup:
    options = [el("option", "any status", value="")]
    options += [el("option", s, value=s, selected=query.get("status") == s) for s in statuses]
    return el(
        "form",
        el("input", type="search", name="q", value=query.get("q", ""), placeholder="name contains", aria_label="name"),
        el("select", options, name="status", aria_label="status"),
        el("input", type="hidden", name="sort", value=query.get("sort")) if query.get("sort") else None,
        el("input", type="hidden", name="order", value=query.get("order")) if query.get("order") else None,
        el("button", "filter", type="submit"),
        method="get", action="/", class_="filters",
    )


def runs_page(site: Site, query: Mapping[str, str], page: int) -> Markup:
    rows = site.rows()
    statuses = sorted({r.summary.status for r in rows if r.summary.status})
    shown = _sorted(_filtered(rows, query.get("q", ""), query.get("status", "")),
                    query.get("sort", "started"), query.get("order", "desc") == "desc")
    visible, page, pages = page_slice(shown, page, PAGE_SIZE)
    headers = [_header(label, key, query) for label, key, _ in COLUMNS]
    body = [el("tr", [el("td", c) for c in _cells(r)], data_run=r.name) for r in visible]
    errors = [el("li", f"{r.name}: {r.summary.error}") for r in visible if r.summary.error]
    return layout(
        "Runs", [(None, str(site.directory))],
        _filter_form(query, statuses),
        el("p", f"{len(shown)} of {len(rows)} runs", class_="muted"),
        el("div", el("table", el("thead", el("tr", [el("th", h) for h in headers])), el("tbody", body), id="runs"),
           class_="wide") if shown else el("p", "No run matches." if rows else f"No runs under {site.directory} yet."),
        pager("/", query, page, pages),
        el("ul", errors, class_="errors") if errors else None,
        live=any(r.summary.status == "running" for r in rows),
    )
