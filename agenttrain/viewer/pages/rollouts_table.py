"""The table of a rollouts file (an epoch's or an evaluation's): one row per task, filtered and paginated."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from agenttrain.viewer.html import Markup, el, joined, link, page_slice, pager, render, table, verdict, with_query
from agenttrain.viewer.rollout_index import RolloutSummary
from agenttrain.viewer.site import Rollouts

PAGE_SIZE = 50
ANSWER_CHARS = 60


def short(value: Any) -> str:
    text = "–" if value is None else " ".join(str(value).split())
    return text if len(text) <= ANSWER_CHARS else text[: ANSWER_CHARS - 1] + "…"


def flip(was: bool | None, now: bool) -> str:
    return "–" if was is None or was == now else ("fixed" if now else "broken")


def _cells(rollouts: Rollouts, row: RolloutSummary, before: dict[str, bool]) -> list[Any]:
    change = flip(before.get(row.id), row.correct)
    calls = f"{row.calls}" + (f" ({row.failed_calls} failed)" if row.failed_calls else "")
    code_runs = f"{row.code_runs}" + (f" ({row.code_errors} failed)" if row.code_errors else "")
    return [link(rollouts.task_url(row.id), row.id), verdict(row.correct),
            el("span", change, class_=f"flip {change}"), row.stop_reason or "–", row.turns, calls, code_runs,
            el("span", short(row.error), class_="error wrap") if row.error else "–",
            el("span", short(row.extracted), class_="wrap"), el("span", short(row.gold), class_="wrap")]


def _filters(rollouts: Rollouts, before: dict[str, bool]) -> dict[str, tuple[str, Callable[[RolloutSummary], bool]]]:
    found = {
        "all": ("all", lambda r: True),
        "right": ("right", lambda r: r.correct),
        "wrong": ("wrong", lambda r: not r.correct),
    }
    if rollouts.baseline:
        found["flipped"] = (f"flipped since {rollouts.baseline.title}",
                            lambda r: r.id in before and before[r.id] != r.correct)
    return found


def rollouts_table(rollouts: Rollouts, query: Mapping[str, str], page: int) -> Markup:
    rows = rollouts.index.rows
    before = rollouts.baseline_outcomes()
    filters = _filters(rollouts, before)
    wanted = query.get("filter", "all") if query.get("filter") in filters else "all"
    chosen = [r for r in rows if filters[wanted][1](r)]
    visible, page, pages = page_slice(chosen, page, PAGE_SIZE)
    tabs = [el("span", label, class_="current") if key == wanted
            else link(with_query(rollouts.url, {"filter": key if key != "all" else None}), label, data_filter=key)
            for key, (label, _) in filters.items()]
    headers = ["task", "result", f"vs {rollouts.baseline.title}" if rollouts.baseline else "flip", "stop reason",
               "turns", "function calls", "code runs", "error", "answer", "gold"]
    return render([
        el("p", joined(tabs, " · "), class_="tabs"),
        el("p", f"{len(chosen)} of {len(rows)} rollouts", class_="muted"),
        table(headers, [_cells(rollouts, r, before) for r in visible], id="rollouts"),
        pager(rollouts.url, query, page, pages),
    ])
