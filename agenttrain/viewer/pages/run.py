"""One run: its learning curve, the epoch table, held-out evaluations, cost per role and the config."""

from __future__ import annotations

from typing import Any

from agenttrain.errors import UserError
from agenttrain.names import STRICT_MEANING
from agenttrain.readback.history import (
    load_evaluations,
    optimizer_note,
    outcome_label,
    usage_cost,
    usage_sum,
    usage_tokens,
)
from agenttrain.readback.listing import RunSummary, summarise_run
from agenttrain.rundir.directory import RunDir, Snapshot
from agenttrain.viewer.curve import EpochPoint, learning_curve, legend
from agenttrain.viewer.highlight import code
from agenttrain.viewer.html import REFRESH_S, Markup, dollars, el, layout, link, moment, percent, render, table
from agenttrain.viewer.pages.candidates import is_search
from agenttrain.viewer.pages.search import search_form
from agenttrain.viewer.site import Site, find_evaluation
from agenttrain.viewer.urls import candidates_url, diff_url, epoch_url, eval_url, run_url, search_url


def _facts(run: RunDir, snapshots: list[Snapshot], summary: RunSummary) -> Markup:
    info = run.info()
    try:
        experiment = run.experiment()
        setup = (f"{experiment.task.name} task; {experiment.agent.type} agent on {experiment.agent.model}; "
                 f"optimizer {experiment.optimizer.model}")
    except UserError as exc:
        setup = str(exc)
    reason = f" ({info.reason})" if info.reason else ""
    best = summary.best_epoch
    facts = [
        ("status", el("span", summary.status or "?", class_=f"status {summary.status}"), reason,
         el("span", f" (this page reloads itself every {REFRESH_S} s while the run trains)", class_="muted")
         if summary.status == "running" else None),
        ("setup", setup),
        ("started", moment(info.started), f", finished {moment(info.finished)}"),
        ("epochs saved", len(snapshots)),
        ("best epoch", link(epoch_url(run, best), best) if best is not None else "–",
         f", train accuracy {percent(summary.best_train_accuracy)}" if best is not None else ""),
        ("cost", dollars(summary.cost_usd), " (training and evaluations)"),
        ("folder", el("code", str(run.path))),
    ]
    return el("dl", [[el("dt", name), el("dd", *value)] for name, *value in facts], class_="facts")


def _epoch_rows(run: RunDir, snapshots: list[Snapshot], splits: list[str], evaluations: list[Any]) -> list[list[Any]]:
    rows, best = [], run.best_if_any()
    for i, s in enumerate(snapshots):
        m = s.metrics
        held_out = [percent(e.accuracy) if (e := find_evaluation(evaluations, split, s.epoch)) else "–"
                    for split in splits]
        previous = snapshots[i - 1].epoch if i else None
        diff = link(diff_url(run, previous, s.epoch), f"{previous} → {s.epoch}") if previous is not None else "–"
        label = f"epoch {s.epoch}" + (" ★ best" if s.epoch == best else "")
        note = optimizer_note(m)
        rejected = any(a.status == "rejected" for a in m.actions)
        rows.append([link(epoch_url(run, s.epoch), label),
                     el("span", outcome_label(m.status), class_=f"outcome {m.status}"), percent(m.train_accuracy),
                     *held_out, m.function_count, m.applied_actions,
                     el("div", note or "–", class_="prose error" if rejected else "prose"), usage_tokens(m.usage),
                     dollars(usage_cost(m.usage)), diff])
    return rows


def _diff_form(run: RunDir, epochs: list[int]) -> Markup:
    def choice(name: str, chosen: int) -> Markup:
        return el("select", [el("option", f"epoch {e}", value=e, selected=e == chosen) for e in epochs], name=name,
                  aria_label=name)

    return el("form", "Compare ", choice("a", epochs[0]), " with ", choice("b", epochs[-1]), " ",
              el("button", "diff", type="submit"), method="get", action=f"{run_url(run)}diff", class_="filters")


def _evaluations(run: RunDir, evaluations: list[Any]) -> Markup:
    if not evaluations:
        return el("p", "No held-out evaluation yet: run ", el("code", "agenttrain eval RUN"), ".", class_="muted")
    strict = any(e.accuracy_strict is not None for e in evaluations)
    rows = []
    for e in evaluations:
        interval = e.ci95
        rows.append([link(eval_url(run, e), e.split), e.epoch, percent(e.accuracy),
                     f"{percent(interval[0])} – {percent(interval[1])}" if interval else "–", f"{e.correct}/{e.n}",
                     *([percent(e.accuracy_strict)] if strict else []), dollars(e.cost_usd)])
    headers = ["split", "epoch", "accuracy", "95% CI (Wilson)", "correct", *(["strict"] if strict else []), "cost"]
    return render([table(headers, rows, id="evaluations"),
                   el("p", STRICT_MEANING, class_="muted") if strict else None])


SPEND_FIELDS = ("requests", "cache_hits", "prompt_tokens", "cached_prompt_tokens", "completion_tokens",
                "reasoning_tokens", "cost_usd", "reasoning_cost_usd")


def _spend(run: RunDir) -> Markup:
    by_role = run.spent()  # journaled, so a run still training shows what it has spent so far
    reasoning = usage_sum(by_role, "reasoning_tokens") > 0  # columns only for reasoning models
    total = {field: usage_sum(by_role, field) for field in SPEND_FIELDS}
    headers = ["role", "requests", "cache hits", "prompt tokens", "of which cached", "completion tokens",
               *(["of which reasoning"] if reasoning else []), "cost", *(["of which reasoning"] if reasoning else [])]
    rows = [[role, u.get("requests", 0), u.get("cache_hits", 0), u.get("prompt_tokens", 0),
             u.get("cached_prompt_tokens", 0), u.get("completion_tokens", 0),
             *([u.get("reasoning_tokens", 0)] if reasoning else []), dollars(u.get("cost_usd", 0.0)),
             *([dollars(u.get("reasoning_cost_usd", 0.0))] if reasoning else [])]
            for role, u in [*sorted(by_role.items()), ("total", total)]]
    return table(headers, rows, id="spend")


def _config(run: RunDir) -> Markup:
    path = run.path / "config.yaml"
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else "(config.yaml is missing)"
    return el("details", el("summary", "config.yaml"), code(text, "yaml"))


def run_page(site: Site, name: str) -> Markup:
    run = site.run(name)
    summary = summarise_run(run.path)
    snapshots = [run.snapshot(e) for e in run.epochs()]
    evaluations = load_evaluations(run)
    splits = sorted({e.split for e in evaluations})
    points = [EpochPoint(s.epoch, s.metrics.train_accuracy, s.metrics.incumbent_accuracy, s.metrics.status)
              for s in snapshots]
    held_out = {split: [(e.epoch, e.accuracy) for e in evaluations if e.split == split] for split in splits}
    headers = ["epoch", "outcome", "train", *splits, "functions", "actions applied", "optimizer", "tokens", "cost",
               "diff"]
    epochs = el(
        "section", el("h2", "Epochs"),
        table(headers, _epoch_rows(run, snapshots, splits, evaluations), id="epochs"), _diff_form(run, run.epochs()),
        el("p", link(candidates_url(run), "The search's candidates: lineage and front")) if is_search(snapshots)
        else None,
    ) if snapshots else el("p", "No epoch has finished yet." if summary.status == "running" else
                           f"No epoch finished: the run ended as {summary.status}.", class_="muted")
    return layout(
        name, [("/", "runs"), (None, name)],
        _facts(run, snapshots, summary),
        el("section", el("h2", "Search the transcripts"), search_form(search_url(run))),
        el("section", el("h2", "Learning curve"), learning_curve(points, held_out), legend(splits)) if points else None,
        epochs,
        el("section", el("h2", "Held-out evaluations"), _evaluations(run, evaluations)),
        el("section", el("h2", "Cost per role"), _spend(run)),
        el("section", el("h2", "Config"), _config(run)),
        live=summary.status == "running",
    )
