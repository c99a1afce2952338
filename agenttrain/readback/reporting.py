"""`agenttrain report`: report.md with the plots beside it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from agenttrain.names import STRICT_MEANING
from agenttrain.readback.history import (
    CallCount,
    RunHistory,
    action_outcome,
    outcome_label,
    usage_cost,
    usage_tokens,
)
from agenttrain.registry import plots
from agenttrain.rundir.directory import RunDir, write_text_atomic

MAX_STUCK_ROWS = 50
QUESTION_CHARS = 90


def _cell(value: Any) -> str:
    text = "–" if value is None else str(value)
    return " ".join(text.split()).replace("|", "\\|")


def _table(headers: list[str], rows: Iterable[Iterable[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _code(value: Any) -> str | None:
    """A value as inline code, so LaTeX such as `a_1*b` is not read as markdown emphasis."""
    if value is None:
        return None
    text = str(value)
    return text if "`" in text else f"`{text}`"


def _image(images: dict[str, Path | None], name: str, alt: str) -> str:
    path = images.get(name)
    return f"![{alt}]({path.name})" if path else ""


def _percent(value: float | None) -> str | None:
    return None if value is None else f"{100 * value:.1f}%"


def _points(value: float) -> str:
    """A difference of accuracies in percentage points, signed."""
    return f"{100 * value:+.1f} pt"


def _interval(bounds: tuple[float, float] | None, show: Callable[[float], str | None]) -> str | None:
    return None if bounds is None else f"{show(bounds[0])} – {show(bounds[1])}"


def _header(history: RunHistory) -> str:
    info, experiment, best = history.info, history.run.experiment(), history.best
    training_cost = usage_cost(info.usage or {})
    eval_cost = sum(e.cost_usd for e in history.evaluations)
    reason = f" ({info.reason})" if info.reason else ""
    return "\n".join([
        f"# Training report: {info.name}",
        "",
        f"- run: `{history.run.path}`, started {info.started}",
        f"- status: **{info.status}**{reason}; {len(history.snapshots)} epochs saved",
        f"- task: {experiment.task.name}; agent: {experiment.agent.type} on `{experiment.agent.model}`; "
        f"optimizer: `{experiment.optimizer.model}`",
        f"- best epoch: **{best.epoch}**, train accuracy {_percent(best.metrics.train_accuracy)} "
        f"with {len(best.functions)} functions ({', '.join(best.functions.names) or 'none'})",
        f"- cost: ${training_cost:.4f} training + ${eval_cost:.4f} evaluation",
    ])


def _curve_section(history: RunHistory, images: dict[str, Path | None]) -> str:
    splits = history.eval_splits
    rows = []
    for s in history.snapshots:
        m = s.metrics
        held_out = [_percent(e.accuracy) if (e := history.evaluation(split, s.epoch)) else None for split in splits]
        epoch = f"{s.epoch} (best)" if s.epoch == history.best_epoch else s.epoch
        rows.append([epoch, outcome_label(m.status), _percent(m.train_accuracy), *held_out, m.function_count,
                     m.applied_actions, usage_tokens(m.usage), f"{usage_cost(m.usage):.4f}"])
    headers = ["epoch", "outcome", "train", *splits, "functions", "actions applied", "tokens", "cost $"]
    return "\n\n".join(filter(None, [
        "## Learning curve",
        _image(images, "learning_curve", "learning curve"),
        "Train accuracy is measured on the training tasks the optimizer sees; the grey line is the accuracy of "
        "the set kept so far (a rolled-back candidate does not replace it). Held-out accuracy, with 95% Wilson "
        "intervals, comes from `agenttrain eval`; `--epoch all` evaluates every epoch for the full test curve.",
        _table(headers, rows),
    ]))


def _evaluations_section(history: RunHistory) -> str:
    if not history.evaluations:
        return "## Held-out evaluations\n\nNone yet: run `agenttrain eval RUN --epoch 0` and `--epoch best`."
    strict = any(e.accuracy_strict is not None for e in history.evaluations)
    rows = []
    for e in history.evaluations:
        rows.append([e.split, e.epoch, _percent(e.accuracy), _interval(e.ci95, _percent), f"{e.correct}/{e.n}",
                     *([_percent(e.accuracy_strict)] if strict else [])])
    headers = ["split", "epoch", "accuracy", "95% CI (Wilson)", "correct", *(["strict"] if strict else [])]
    parts = ["## Held-out evaluations", _table(headers, rows)]
    if strict:
        parts.append(STRICT_MEANING[0].upper() + STRICT_MEANING[1:] + ".")
    comparisons = history.comparisons_with_baseline()
    if comparisons:
        parts.append("Against epoch 0 on the same tasks: the difference with a 95% paired bootstrap interval, and "
                     "the exact McNemar test on the tasks that changed outcome:")
        parts.append(_table(
            ["split", "epoch", "tasks paired", "difference", "95% CI (paired bootstrap)", "fixed", "broken",
             "p-value"],
            [[e.split, e.epoch, c.paired, _points(c.difference), _interval(c.difference_ci95, _points), c.fixed,
              c.broken, f"{c.p_value:.3g}"] for e, c in comparisons],
        ))
    return "\n\n".join(parts)


def _optimizer_section(history: RunHistory) -> str:
    steps = [s.metrics for s in history.snapshots if s.metrics.status != "baseline"]
    if not steps:
        return "## Optimizer steps\n\nNone yet: only the baseline (epoch 0) has run."
    rows = [[m.epoch, outcome_label(m.status), action_outcome(m.actions), "; ".join(m.prompt_cuts) or None]
            for m in steps]
    return "\n\n".join([
        "## Optimizer steps",
        "What the optimizer proposed each epoch, with the reason for every rejected action (counted when the same "
        "reason repeats), and what its prompt left out to fit the model's context.",
        _table(["epoch", "epoch outcome", "optimizer", "prompt cut to fit"], rows),
    ])


def _lineage_section(history: RunHistory) -> str:
    if not history.lineage:
        return "## Function lineage\n\nThe optimizer applied no action."
    rows = [[event.epoch, outcome_label(event.outcome), event.change, _code(event.function), event.reason]
            for event in history.lineage]
    return "\n\n".join([
        "## Function lineage",
        "Every applied optimizer action; a rolled-back epoch's changes were discarded.",
        _table(["epoch", "epoch outcome", "change", "function", "optimizer's reason"], rows),
    ])


def _usage_section(history: RunHistory, images: dict[str, Path | None]) -> str:
    usage = history.function_usage
    if not usage:
        return "## Function usage\n\nThe agent called no learned function."
    rows = []
    for name, by_epoch in usage.items():
        cells = [f"{c.ok}/{c.calls}" if (c := by_epoch.get(e)) else None for e in history.epochs]
        total = sum(by_epoch.values(), CallCount())
        rows.append([_code(name), *cells, f"{total.ok}/{total.calls}"])
    return "\n\n".join([
        "## Function usage",
        _image(images, "function_usage", "function usage"),
        "Successful/all calls per training epoch (an unchanged epoch repeats the kept set's rollouts).",
        _table(["function", *(f"epoch {e}" for e in history.epochs), "total"], rows),
    ])


def _complexity_section(history: RunHistory, images: dict[str, Path | None]) -> str:
    if not history.complexity:
        return "## Complexity\n\nNo epoch has any function."
    rows = [[_code(name), *(_complexity_cell(by_epoch, e) for e in history.epochs)]
            for name, by_epoch in history.complexity.items()]
    return "\n\n".join(filter(None, [
        "## Complexity",
        _image(images, "complexity", "complexity"),
        "Cyclomatic complexity (1 + decision points) of each function's code in each epoch's set.",
        _table(["function", *(f"epoch {e}" for e in history.epochs)], rows),
    ]))


def _complexity_cell(by_epoch: dict[int, int | None], epoch: int) -> str | int | None:
    if epoch not in by_epoch:
        return None  # the function was not in that epoch's set
    value = by_epoch[epoch]
    return "does not parse" if value is None else value


def _spend_section(history: RunHistory, images: dict[str, Path | None]) -> str:
    rows = [[s.epoch, role, u.get("requests", 0), u.get("cache_hits", 0), u.get("prompt_tokens", 0),
             u.get("cached_prompt_tokens", 0), u.get("completion_tokens", 0), u.get("reasoning_tokens", 0),
             f"{u.get('cost_usd', 0.0):.4f}", f"{u.get('reasoning_cost_usd', 0.0):.4f}"]
            for s in history.snapshots for role, u in sorted(s.metrics.usage.items())]
    return "\n\n".join([
        "## Tokens and cost",
        _image(images, "spend", "tokens and cost per epoch"),
        _table(["epoch", "role", "requests", "cache hits", "prompt tokens", "of which cached", "completion tokens",
                "of which reasoning", "cost $", "of which reasoning $"], rows),
        "Completion tokens and cost include a reasoning model's hidden reasoning; cached prompt tokens are those "
        "the provider served from its prompt cache, billed at its cached-input price.",
    ])


def _always_wrong_section(history: RunHistory) -> str:
    stuck = history.always_wrong
    intro = f"{len(stuck)} of {history.task_count} training tasks were wrong in every epoch that ran them."
    if not stuck:
        return f"## Tasks that stayed wrong\n\n{intro}"
    rows = [[_code(r.id), _one_line(r.question), _code(r.gold), _code(r.extracted)]
            for r in stuck[:MAX_STUCK_ROWS]]
    more = f"\n\n…and {len(stuck) - MAX_STUCK_ROWS} more." if len(stuck) > MAX_STUCK_ROWS else ""
    return "\n\n".join([
        "## Tasks that stayed wrong",
        intro,
        _table(["task", "question", "gold", "last answer"], rows) + more,
    ])


def _one_line(text: str) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= QUESTION_CHARS else flat[: QUESTION_CHARS - 1] + "…"


def render_markdown(history: RunHistory, images: dict[str, Path | None]) -> str:
    sections = [
        _header(history),
        _curve_section(history, images),
        _evaluations_section(history),
        _optimizer_section(history),
        _lineage_section(history),
        _usage_section(history, images),
        _complexity_section(history, images),
        _spend_section(history, images),
        _always_wrong_section(history),
    ]
    return "\n\n".join(sections) + "\n"


def write_report(run: RunDir, out_dir: Path | None = None) -> list[Path]:
    """Write report.md and its plots (default: RUN/report/); returns the paths written, report.md first."""
    history = RunHistory(run)
    # inside the run, never through a link someone left there: the plots are written in place
    target = (lambda name: out_dir / name) if out_dir else (lambda name: run.writable("report", name))
    target("").mkdir(parents=True, exist_ok=True)
    images = {r.name: r.value(history, target(f"{r.name}.png")) for r in plots.registrations()}
    report = target("report.md")
    write_text_atomic(report, render_markdown(history, images))
    return [report, *(path for path in images.values() if path)]

