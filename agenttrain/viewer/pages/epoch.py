"""One epoch: its function set, the optimizer actions that made it, and a table of its rollouts."""

from __future__ import annotations

import json
from collections.abc import Mapping

from agenttrain.functions import Function
from agenttrain.readback.function_report import function_reports
from agenttrain.readback.history import action_outcome, outcome_label, usage_cost, usage_tokens
from agenttrain.rundir.directory import RunDir, Snapshot
from agenttrain.viewer.highlight import code
from agenttrain.viewer.html import Markup, dollars, el, joined, layout, link, percent, render, table
from agenttrain.viewer.pages.rollouts_table import rollouts_table
from agenttrain.viewer.site import Site, epoch_rollouts, snapshot
from agenttrain.viewer.urls import diff_url, epoch_url, run_url, task_url


def _facts(run: RunDir, snap: Snapshot, before: int | None, after: int | None) -> Markup:
    m = snap.metrics
    usage = m.usage
    around = [link(epoch_url(run, before), f"← epoch {before}") if before is not None else None,
              link(diff_url(run, before, snap.epoch), "diff with previous") if before is not None else None,
              link(epoch_url(run, after), f"epoch {after} →") if after is not None else None]
    facts = [
        ("outcome", el("span", outcome_label(m.status), class_=f"outcome {m.status}")),
        ("train accuracy", f"{percent(m.train_accuracy)} ({m.train_correct}/{m.train_n})"),
        ("kept set's accuracy", percent(m.incumbent_accuracy)),
        ("spent", f"{usage_tokens(usage)} tokens, {dollars(usage_cost(usage))}"),
        ("folder", el("code", str(snap.path))),
    ]
    return render([el("dl", [[el("dt", k), el("dd", v)] for k, v in facts], class_="facts"),
                   el("p", joined([a for a in around if a], " · "), class_="around")])


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
    m = snap.metrics
    if m.status == "baseline":
        return el("p", "No optimizer step: epoch 0 is the baseline, the agent without learned functions.",
                  class_="muted")
    rejected = any(a.status == "rejected" for a in m.actions)
    cuts = el("p", "The prompt was cut to fit the model's context: ", "; ".join(m.prompt_cuts), ".",
              class_="cuts") if m.prompt_cuts else None
    rows = [[a.action, a.name or "–", el("span", a.status, class_=f"action {a.status}"), a.attempts,
             el("div", a.reason or "–", class_="prose"), el("div", a.error, class_="error prose") if a.error else "–"]
            for a in m.actions]
    return render([
        el("p", action_outcome(m.actions), class_="outcome-line error" if rejected else "outcome-line", id="outcome"),
        cuts,
        table(["action", "function", "status", "attempt", "optimizer's reason", "error"], rows, id="actions")
        if rows else None,
    ])


def _effects(run: RunDir, snap: Snapshot) -> Markup:
    """What each function did in this epoch's rollouts (`agenttrain functions`), tasks linked to transcripts."""
    def tasks(names: list[str]) -> Markup:
        return render(joined([link(task_url(epoch_url(run, snap.epoch), t), t) for t in names], ", ") or "–")

    def epochs(numbers: list[int]) -> Markup:
        return render(joined([link(epoch_url(run, n), str(n)) for n in numbers], ", ") or "–")

    rows = [[el("code", r.effect.name), r.effect.calls, r.effect.failed_calls, tasks(r.effect.tasks), r.effect.right,
             epochs([r.appeared]), epochs([v.epoch for v in r.revisions[1:]]), tasks(r.effect.fixed),
             tasks(r.effect.broken)] for r in function_reports(run, snap.epoch)]
    return table(["function", "calls", "failed", "tasks where called", "right", "appeared", "revised in", "fixed",
                  "broken"], rows, id="effects")


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
        el("section", el("h2", "What each function did"), _effects(run, snap)) if len(snap.functions) else None,
        el("section", el("h2", "Optimizer actions"), _actions(snap)),
        el("section", el("h2", "Rollouts"), rollouts_table(epoch_rollouts(run, snap.epoch), query, page)),
    )
