"""One epoch: its function set, the optimizer actions that made it, and a table of its rollouts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from agenttrain.functions import Function
from agenttrain.history import outcome_label, usage_cost, usage_tokens
from agenttrain.runs import RunDir, Snapshot
from agenttrain.viewer.highlight import code
from agenttrain.viewer.html import (
    Markup,
    dollars,
    el,
    layout,
    link,
    page_slice,
    pager,
    percent,
    render,
    segment,
    table,
    verdict,
    with_query,
)
from agenttrain.viewer.pages.run import run_url
from agenttrain.viewer.rollout_index import RolloutSummary
from agenttrain.viewer.site import Site, previous_epoch, rollouts, snapshot

PAGE_SIZE = 50
FILTERS = {"all": "all", "right": "right", "wrong": "wrong", "flipped": "flipped since the previous epoch"}
ANSWER_CHARS = 60


def epoch_url(run: RunDir, epoch: int) -> str:
    return f"{run_url(run)}epochs/{epoch}"


def rollout_url(run: RunDir, epoch: int, task: str) -> str:
    return f"{epoch_url(run, epoch)}/tasks/{segment(task)}"


def short(value: Any) -> str:
    text = "–" if value is None else " ".join(str(value).split())
    return text if len(text) <= ANSWER_CHARS else text[: ANSWER_CHARS - 1] + "…"


def _facts(run: RunDir, snap: Snapshot, before: int | None, after: int | None) -> Markup:
    m = snap.metrics
    usage = m.get("usage", {})
    around = [link(epoch_url(run, before), f"← epoch {before}") if before is not None else None,
              link(f"{run_url(run)}diff?a={before}&b={snap.epoch}", "diff with previous") if before is not None
              else None,
              link(epoch_url(run, after), f"epoch {after} →") if after is not None else None]
    facts = [
        ("outcome", el("span", outcome_label(m.get("status", "?")), class_=f"outcome {m.get('status')}")),
        ("train accuracy", f"{percent(m.get('train_accuracy'))} ({m.get('train_correct')}/{m.get('train_n')})"),
        ("kept set's accuracy", percent(m.get("incumbent_accuracy"))),
        ("spent", f"{usage_tokens(usage)} tokens, {dollars(usage_cost(usage))}"),
        ("folder", el("code", str(snap.path))),
    ]
    return render([el("dl", [[el("dt", k), el("dd", v)] for k, v in facts], class_="facts"),
              el("p", [[a, " "] for a in around if a], class_="around")])


def function_block(function: Function) -> Markup:
    schema = json.dumps(function.parameters, indent=2, ensure_ascii=False)
    return el(
        "article",
        el("h3", el("code", function.name)),
        el("p", function.description),
        el("p", "packages: ", ", ".join(function.packages), class_="muted") if function.packages else None,
        el("details", el("summary", "parameters"), code(schema, "json")),
        code(function.code, "python"),
        class_="function", id=f"function-{function.name}",
    )


def _actions(snap: Snapshot) -> Markup:
    actions = snap.metrics.get("actions", [])
    if not actions:
        return el("p", "No optimizer action made this set (the baseline, or a run without an optimizer step).",
                  class_="muted")
    rows = [[a.get("action"), a.get("name") or "–", el("span", a.get("status"), class_=f"action {a.get('status')}"),
             a.get("attempts", "–"), el("div", a.get("reason") or "–", class_="prose"),
             el("div", a.get("error"), class_="error") if a.get("error") else "–"] for a in actions]
    return table(["action", "function", "status", "attempt", "optimizer's reason", "error"], rows, id="actions")


def _cells(run: RunDir, epoch: int, row: RolloutSummary, before: dict[str, bool]) -> list[Any]:
    was = before.get(row.id)
    flip = "–" if was is None or was == row.correct else ("fixed" if row.correct else "broken")
    calls = f"{row.calls}" + (f" ({row.failed_calls} failed)" if row.failed_calls else "")
    code_runs = f"{row.code_runs}" + (f" ({row.code_errors} failed)" if row.code_errors else "")
    return [link(rollout_url(run, epoch, row.id), row.id), verdict(row.correct),
            el("span", flip, class_=f"flip {flip}"), row.stop_reason or "–", row.turns, calls, code_runs,
            el("span", short(row.error), class_="error") if row.error else "–", short(row.extracted), short(row.gold)]


def _rollouts(run: RunDir, snap: Snapshot, query: Mapping[str, str], page: int) -> Markup:
    rows = rollouts(snap).rows
    earlier = previous_epoch(run, snap.epoch)
    before = {r.id: r.correct for r in rollouts(run.snapshot(earlier)).rows} if earlier is not None else {}
    wanted = query.get("filter", "all") if query.get("filter") in FILTERS else "all"
    keep = {
        "all": lambda r: True, "right": lambda r: r.correct, "wrong": lambda r: not r.correct,
        "flipped": lambda r: r.id in before and before[r.id] != r.correct,
    }[wanted]
    chosen = [r for r in rows if keep(r)]
    visible, page, pages = page_slice(chosen, page, PAGE_SIZE)
    path = epoch_url(run, snap.epoch)
    tabs = [el("span", label, class_="current") if key == wanted
            else link(with_query(path, {"filter": key if key != "all" else None}), label, data_filter=key)
            for key, label in FILTERS.items()]
    headers = ["task", "result", f"vs epoch {earlier}" if earlier is not None else "flip", "stop reason", "turns",
               "function calls", "code runs", "error", "answer", "gold"]
    return render([
        el("p", [[t, " · "] for t in tabs[:-1]], tabs[-1], class_="tabs"),
        el("p", f"{len(chosen)} of {len(rows)} rollouts", class_="muted"),
        table(headers, [_cells(run, snap.epoch, r, before) for r in visible], id="rollouts"),
        pager(path, query, page, pages),
    ])


def epoch_page(site: Site, name: str, epoch: str, query: Mapping[str, str], page: int) -> Markup:
    run = site.run(name)
    snap = snapshot(run, epoch)
    epochs = run.epochs()
    position = epochs.index(snap.epoch)
    before = epochs[position - 1] if position else None
    after = epochs[position + 1] if position + 1 < len(epochs) else None
    functions = [function_block(f) for f in snap.functions] or el("p", "No functions: the agent works unaided.",
                                                                   class_="muted")
    return layout(
        f"{name} · epoch {snap.epoch}", [("/", "runs"), (run_url(run), name), (None, f"epoch {snap.epoch}")],
        _facts(run, snap, before, after),
        el("section", el("h2", f"Functions ({len(snap.functions)})"), functions),
        el("section", el("h2", "Optimizer actions"), _actions(snap)),
        el("section", el("h2", "Rollouts"), _rollouts(run, snap, query, page)),
    )
