"""What training learned, for people: report.md with PNG plots, and the one-line run summaries of `runs`.

Everything is read back from the run directory (snapshots, metrics, rollouts, evals/), so a report can be
drawn for a run that is still training, was interrupted, or was copied from another machine.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agenttrain.complexity import cyclomatic_complexity
from agenttrain.errors import UserError
from agenttrain.runs import RunDir, Snapshot, find_runs, read_json, read_jsonl, write_text_atomic
from agenttrain.stats import PairedComparison, bootstrap_ci, compare_outcomes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# How each epoch outcome is drawn and named: (label, marker, colour).
OUTCOMES = {
    "baseline": ("baseline", "o", "tab:blue"),
    "accepted": ("accepted", "o", "tab:green"),
    "rolled_back": ("rolled back", "X", "tab:red"),
    "unchanged": ("unchanged", "s", "tab:gray"),
}
ACTION_VERBS = {"add_function": "added", "revise_function": "revised", "remove_function": "removed"}
MAX_STUCK_ROWS = 50
QUESTION_CHARS = 90


# -- reading usage blocks ({role: {prompt_tokens, completion_tokens, cost_usd, ...}}) ---------------------------


def usage_tokens(usage: dict[str, dict[str, Any]]) -> int:
    return sum(u.get("prompt_tokens", 0) + u.get("completion_tokens", 0) for u in usage.values())


def usage_cost(usage: dict[str, dict[str, Any]]) -> float:
    return sum(u.get("cost_usd", 0.0) for u in usage.values())


# -- what the run holds -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """One result of `agenttrain eval`, as written under RUN/evals/."""

    split: str
    epoch: int
    accuracy: float
    correct: int
    n: int
    cost_usd: float
    records_path: Path

    def records(self) -> list[dict[str, Any]]:
        return read_jsonl(self.records_path)

    def ci95(self) -> tuple[float, float] | None:
        outcomes = [bool(r["correct"]) for r in self.records()]
        return bootstrap_ci(outcomes) if outcomes else None


def load_evaluations(run: RunDir) -> list[Evaluation]:
    """Every RUN/evals/<split>-epoch-N.json, ordered by split then epoch."""
    evaluations = []
    for path in run.evals_dir.glob("*.json"):
        data = read_json(path)
        try:
            evaluations.append(Evaluation(
                data["split"], int(data["epoch"]), float(data["accuracy"]), int(data["correct"]), int(data["n"]),
                usage_cost(data.get("usage", {})), path.with_name(f"{path.stem}.rollouts.jsonl"),
            ))
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{path}: not an eval result ({exc!r}); delete it or rerun `agenttrain eval`") from None
    return sorted(evaluations, key=lambda e: (e.split, e.epoch))


@dataclass(frozen=True)
class CallCount:
    calls: int = 0
    ok: int = 0

    def __add__(self, other: CallCount) -> CallCount:
        return CallCount(self.calls + other.calls, self.ok + other.ok)


@dataclass(frozen=True)
class LineageEvent:
    """One applied optimizer action; `outcome` says whether its epoch's set was kept."""

    epoch: int
    outcome: str  # accepted | rolled_back | unchanged
    change: str  # added | revised | removed
    function: str
    reason: str | None


class RunHistory:
    """A run read back once: its epochs, their rollouts and the evaluations, plus what can be derived from them."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.info = run.info()
        self.snapshots: list[Snapshot] = [run.snapshot(e) for e in run.epochs()]
        if not self.snapshots:
            raise UserError(f"{run.path}: no epoch has finished yet; a report needs at least epoch-0")
        self.rollouts = {s.epoch: s.rollouts() for s in self.snapshots}
        self.evaluations = load_evaluations(run)
        self.best_epoch = run.best_epoch()

    @property
    def epochs(self) -> list[int]:
        return [s.epoch for s in self.snapshots]

    @property
    def best(self) -> Snapshot:
        return next((s for s in self.snapshots if s.epoch == self.best_epoch), self.snapshots[-1])

    def evaluation(self, split: str, epoch: int) -> Evaluation | None:
        return next((e for e in self.evaluations if (e.split, e.epoch) == (split, epoch)), None)

    @property
    def eval_splits(self) -> list[str]:
        return sorted({e.split for e in self.evaluations})

    @cached_property
    def lineage(self) -> list[LineageEvent]:
        return [
            LineageEvent(s.epoch, s.metrics["status"], ACTION_VERBS[a["action"]], a["name"], a.get("reason"))
            for s in self.snapshots
            for a in s.metrics.get("actions", [])
            if a.get("status") == "applied" and a.get("action") in ACTION_VERBS
        ]

    @cached_property
    def function_usage(self) -> dict[str, dict[int, CallCount]]:
        """Calls the agent made per function name and epoch (names it invented included: they show confusion)."""
        usage: dict[str, dict[int, CallCount]] = defaultdict(dict)
        for epoch, records in self.rollouts.items():
            for record in records:
                for call in record.get("function_calls", []):
                    seen = usage[call["name"]].get(epoch, CallCount())
                    usage[call["name"]][epoch] = seen + CallCount(1, int(bool(call.get("ok"))))
        return dict(sorted(usage.items()))

    @cached_property
    def complexity(self) -> dict[str, dict[int, int | None]]:
        """Cyclomatic complexity per function name and epoch; None where the code does not parse."""
        table: dict[str, dict[int, int | None]] = defaultdict(dict)
        for snapshot in self.snapshots:
            for function in snapshot.functions:
                try:
                    table[function.name][snapshot.epoch] = cyclomatic_complexity(function.code)
                except SyntaxError:
                    table[function.name][snapshot.epoch] = None
        return dict(table)

    @cached_property
    def always_wrong(self) -> list[dict[str, Any]]:
        """The latest record of every training task that no epoch solved, in order of first appearance."""
        latest: dict[str, dict[str, Any]] = {}
        solved: set[str] = set()
        for epoch in self.epochs:
            for record in self.rollouts[epoch]:
                latest[record["id"]] = record
                if record["correct"]:
                    solved.add(record["id"])
        return [r for task, r in latest.items() if task not in solved]

    @cached_property
    def task_count(self) -> int:
        return len({r["id"] for records in self.rollouts.values() for r in records})

    def comparisons_with_baseline(self) -> list[tuple[Evaluation, PairedComparison]]:
        """Each evaluated epoch against epoch 0 on the same split, paired by task."""
        found = []
        for evaluation in self.evaluations:
            baseline = self.evaluation(evaluation.split, 0)
            if baseline is not None and evaluation.epoch != 0:
                found.append((evaluation, compare_outcomes(baseline.records(), evaluation.records())))
        return found


# -- plots (matplotlib's object API with no pyplot: headless, no global state) ----------------------------------


def _figure(width: float, height: float) -> Figure:
    # Imported here: matplotlib takes half a second to load and only the plots need it (not `agenttrain runs`).
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _integer_epochs(ax: Axes, epochs: list[int]) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    ax.set_xlabel("epoch")


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=120)
    return path


def plot_learning_curve(history: RunHistory, path: Path) -> Path:
    fig = _figure(8, 4.2)
    ax = fig.add_subplot()
    ax.step(history.epochs, [s.metrics["incumbent_accuracy"] for s in history.snapshots], where="post",
            color="0.55", linewidth=1.5, label="kept set (train)")
    for status, (label, marker, colour) in OUTCOMES.items():
        points = [(s.epoch, s.metrics["train_accuracy"]) for s in history.snapshots if s.metrics["status"] == status]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.scatter(xs, ys, marker=marker, color=colour, s=60, zorder=3, label=f"train: {label}")
    for shift, split in enumerate(history.eval_splits, start=1):
        evaluations = [e for e in history.evaluations if e.split == split]
        intervals = [e.ci95() or (e.accuracy, e.accuracy) for e in evaluations]
        below = [e.accuracy - low for e, (low, _) in zip(evaluations, intervals, strict=True)]
        above = [high - e.accuracy for e, (_, high) in zip(evaluations, intervals, strict=True)]
        # nudged sideways so a held-out point never hides the training marker of the same epoch
        ax.errorbar([e.epoch + 0.12 * shift for e in evaluations], [e.accuracy for e in evaluations],
                    yerr=[below, above], fmt="D--", capsize=4, markersize=6, label=f"{split} (95% CI)")
    _integer_epochs(ax, history.epochs)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("accuracy")
    ax.set_title("Learning curve")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return _save(fig, path)


def plot_function_usage(history: RunHistory, path: Path) -> Path | None:
    usage = history.function_usage
    if not usage:
        return None
    names, epochs = list(usage), history.epochs
    calls = [[usage[name].get(epoch, CallCount()).calls for epoch in epochs] for name in names]
    fig = _figure(max(5.0, 2.5 + 0.75 * len(epochs)), max(2.4, 1.2 + 0.45 * len(names)))
    ax = fig.add_subplot()
    image = ax.imshow(calls, cmap="Blues", aspect="auto", vmin=0)
    darkest = max(max(row) for row in calls) or 1
    for row, name in enumerate(names):
        for column, epoch in enumerate(epochs):
            count = usage[name].get(epoch, CallCount())
            colour = "white" if count.calls > darkest * 0.6 else "black"
            ax.text(column, row, f"{count.ok}/{count.calls}", ha="center", va="center", color=colour, fontsize=9)
    ax.set_xticks(range(len(epochs)), labels=[str(e) for e in epochs])
    ax.set_yticks(range(len(names)), labels=names)
    ax.set_xlabel("epoch")
    ax.set_title("Function calls per epoch (successful/all)")
    fig.colorbar(image, ax=ax, label="calls")
    return _save(fig, path)


def plot_complexity(history: RunHistory, path: Path) -> Path | None:
    best = history.best
    scored = [(name, by_epoch[best.epoch]) for name, by_epoch in history.complexity.items()
              if by_epoch.get(best.epoch) is not None]
    if not scored:
        return None
    names, values = zip(*scored, strict=True)
    fig = _figure(6.5, max(2.2, 1.0 + 0.4 * len(names)))
    ax = fig.add_subplot()
    ax.barh(names, values, color="tab:purple")
    ax.invert_yaxis()  # first function on top, as in the tables
    ax.set_xlabel("cyclomatic complexity")
    ax.set_title(f"Complexity of the functions of epoch {best.epoch} (best)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_spend(history: RunHistory, path: Path) -> Path:
    fig = _figure(10, 3.8)
    tokens_ax, cost_ax = fig.subplots(1, 2)
    roles = sorted({role for s in history.snapshots for role in s.metrics.get("usage", {})})
    panels = ((tokens_ax, "thousand tokens", "Tokens per epoch", lambda u: usage_tokens({"": u}) / 1000),
              (cost_ax, "US dollars", "Cost per epoch", lambda u: usage_cost({"": u})))
    for ax, unit, title, measure in panels:
        bottom = [0.0] * len(history.snapshots)
        for role in roles:
            heights = [measure(s.metrics.get("usage", {}).get(role, {})) for s in history.snapshots]
            ax.bar(history.epochs, heights, bottom=bottom, label=role)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        _integer_epochs(ax, history.epochs)
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    if roles:
        tokens_ax.legend(title="role", frameon=False)
    return _save(fig, path)


PLOTS: dict[str, Callable[[RunHistory, Path], Path | None]] = {
    "learning_curve": plot_learning_curve,
    "function_usage": plot_function_usage,
    "complexity": plot_complexity,
    "spend": plot_spend,
}


# -- markdown --------------------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    text = "–" if value is None else str(value)
    return " ".join(text.split()).replace("|", "\\|")


def _table(headers: list[str], rows: Iterable[Iterable[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _image(images: dict[str, Path | None], name: str, alt: str) -> str:
    path = images.get(name)
    return f"![{alt}]({path.name})" if path else ""


def _percent(value: float | None) -> str | None:
    return None if value is None else f"{100 * value:.1f}%"


def _header(history: RunHistory) -> str:
    info, experiment, best = history.info, history.run.experiment(), history.best
    training_cost = usage_cost(info.get("usage") or {})
    eval_cost = sum(e.cost_usd for e in history.evaluations)
    reason = f" ({info['reason']})" if info.get("reason") else ""
    return "\n".join([
        f"# Training report: {info.get('name', history.run.path.name)}",
        "",
        f"- run: `{history.run.path}`, started {info.get('started', '?')}",
        f"- status: **{info.get('status', '?')}**{reason}; {len(history.snapshots)} epochs saved",
        f"- task: {experiment.task.name}; agent: {experiment.agent.type} on `{experiment.agent.model}`; "
        f"optimizer: `{experiment.optimizer.model}`",
        f"- best epoch: **{best.epoch}**, train accuracy {_percent(best.metrics['train_accuracy'])} "
        f"with {len(best.functions)} functions ({', '.join(best.functions.names) or 'none'})",
        f"- cost: ${training_cost:.4f} training + ${eval_cost:.4f} evaluation",
    ])


def _curve_section(history: RunHistory, images: dict[str, Path | None]) -> str:
    splits = history.eval_splits
    rows = []
    for s in history.snapshots:
        m = s.metrics
        held_out = [_percent(e.accuracy) if (e := history.evaluation(split, s.epoch)) else None for split in splits]
        applied = sum(1 for a in m.get("actions", []) if a.get("status") == "applied")
        epoch = f"{s.epoch} (best)" if s.epoch == history.best_epoch else s.epoch
        rows.append([epoch, OUTCOMES.get(m["status"], (m["status"],))[0], _percent(m["train_accuracy"]),
                     *held_out, m["function_count"], applied, usage_tokens(m.get("usage", {})),
                     f"{usage_cost(m.get('usage', {})):.4f}"])
    headers = ["epoch", "outcome", "train", *splits, "functions", "actions applied", "tokens", "cost $"]
    return "\n\n".join(filter(None, [
        "## Learning curve",
        _image(images, "learning_curve", "learning curve"),
        "Train accuracy is measured on the training tasks the optimizer sees; the grey line is the accuracy of "
        "the set kept so far (a rolled-back candidate does not replace it).",
        _table(headers, rows),
    ]))


def _evaluations_section(history: RunHistory) -> str:
    if not history.evaluations:
        return "## Held-out evaluations\n\nNone yet: run `agenttrain eval RUN --epoch 0` and `--epoch best`."
    rows = []
    for e in history.evaluations:
        interval = e.ci95()
        shown = f"{_percent(interval[0])} – {_percent(interval[1])}" if interval else None
        rows.append([e.split, e.epoch, _percent(e.accuracy), shown, f"{e.correct}/{e.n}"])
    parts = ["## Held-out evaluations", _table(["split", "epoch", "accuracy", "95% CI (bootstrap)", "correct"], rows)]
    comparisons = history.comparisons_with_baseline()
    if comparisons:
        parts.append("Against epoch 0 on the same tasks (exact McNemar test on the tasks that changed outcome):")
        parts.append(_table(
            ["split", "epoch", "tasks paired", "fixed", "broken", "p-value"],
            [[e.split, e.epoch, c.paired, c.fixed, c.broken, f"{c.p_value:.3g}"] for e, c in comparisons],
        ))
    return "\n\n".join(parts)


def _lineage_section(history: RunHistory) -> str:
    if not history.lineage:
        return "## Function lineage\n\nThe optimizer applied no action."
    rows = [[event.epoch, OUTCOMES.get(event.outcome, (event.outcome,))[0], event.change, f"`{event.function}`",
             event.reason] for event in history.lineage]
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
        rows.append([f"`{name}`", *cells, f"{total.ok}/{total.calls}"])
    return "\n\n".join([
        "## Function usage",
        _image(images, "function_usage", "function usage"),
        "Successful/all calls per training epoch (an unchanged epoch repeats the kept set's rollouts).",
        _table(["function", *(f"epoch {e}" for e in history.epochs), "total"], rows),
    ])


def _complexity_section(history: RunHistory, images: dict[str, Path | None]) -> str:
    if not history.complexity:
        return "## Complexity\n\nNo epoch has any function."
    rows = [[f"`{name}`", *(by_epoch.get(e, "") if by_epoch.get(e, "") is not None else "does not parse"
                            for e in history.epochs)] for name, by_epoch in history.complexity.items()]
    return "\n\n".join(filter(None, [
        "## Complexity",
        _image(images, "complexity", "complexity"),
        "Cyclomatic complexity (1 + decision points) of each function's code in each epoch's set.",
        _table(["function", *(f"epoch {e}" for e in history.epochs)], rows),
    ]))


def _spend_section(history: RunHistory, images: dict[str, Path | None]) -> str:
    rows = [[s.epoch, role, u.get("requests", 0), u.get("cache_hits", 0), u.get("prompt_tokens", 0),
             u.get("completion_tokens", 0), f"{u.get('cost_usd', 0.0):.4f}"]
            for s in history.snapshots for role, u in sorted(s.metrics.get("usage", {}).items())]
    return "\n\n".join([
        "## Tokens and cost",
        _image(images, "spend", "tokens and cost per epoch"),
        _table(["epoch", "role", "requests", "cache hits", "prompt tokens", "completion tokens", "cost $"], rows),
    ])


def _always_wrong_section(history: RunHistory) -> str:
    stuck = history.always_wrong
    intro = f"{len(stuck)} of {history.task_count} training tasks were wrong in every epoch that ran them."
    if not stuck:
        return f"## Tasks that stayed wrong\n\n{intro}"
    rows = [[f"`{r['id']}`", _shorten(r.get("question", "")), r.get("gold"), r.get("extracted")]
            for r in stuck[:MAX_STUCK_ROWS]]
    more = f"\n\n…and {len(stuck) - MAX_STUCK_ROWS} more." if len(stuck) > MAX_STUCK_ROWS else ""
    return "\n\n".join([
        "## Tasks that stayed wrong",
        intro,
        _table(["task", "question", "gold", "last answer"], rows) + more,
    ])


def _shorten(text: str) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= QUESTION_CHARS else flat[: QUESTION_CHARS - 1] + "…"


def render_markdown(history: RunHistory, images: dict[str, Path | None]) -> str:
    sections = [
        _header(history),
        _curve_section(history, images),
        _evaluations_section(history),
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
    out_dir = out_dir or run.path / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    images = {name: plot(history, out_dir / f"{name}.png") for name, plot in PLOTS.items()}
    report = out_dir / "report.md"
    write_text_atomic(report, render_markdown(history, images))
    return [report, *(path for path in images.values() if path)]


# -- `agenttrain runs` ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSummary:
    run: str
    name: str | None = None
    status: str | None = None
    started: str | None = None
    epochs: int = 0
    best_epoch: int | None = None
    best_train_accuracy: float | None = None
    test_epoch: int | None = None  # which evaluated epoch `test_accuracy` belongs to
    test_accuracy: float | None = None
    cost_usd: float = 0.0  # training plus every evaluation
    error: str | None = None  # why the run could not be read

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise_run(path: Path) -> RunSummary:
    run = RunDir.open(path)
    info = run.info()
    best = read_json(run.path / "best.json") if (run.path / "best.json").exists() else {}
    evaluations = load_evaluations(run)
    tests = [e for e in evaluations if e.split == "test"]
    # the best epoch's test result when it was evaluated, else the latest evaluated epoch's
    test = next((e for e in tests if e.epoch == best.get("epoch")), tests[-1] if tests else None)
    return RunSummary(
        run=str(run.path), name=info.get("name"), status=info.get("status"), started=info.get("started"),
        epochs=len(run.epochs()), best_epoch=best.get("epoch"), best_train_accuracy=best.get("train_accuracy"),
        test_epoch=test.epoch if test else None, test_accuracy=test.accuracy if test else None,
        cost_usd=usage_cost(info.get("usage") or {}) + sum(e.cost_usd for e in evaluations),
    )


def list_runs(output_dir: Path) -> list[RunSummary]:
    """Every run under `output_dir`, oldest first; a damaged run is listed with its error, not fatal."""
    if not output_dir.is_dir():
        raise UserError(f"{output_dir}: no such directory; pass the folder that holds your runs (default ./runs)")
    summaries = []
    for path in find_runs(output_dir):
        try:
            summaries.append(summarise_run(path))
        except UserError as exc:
            summaries.append(RunSummary(run=str(path), status="unreadable", error=str(exc)))
    return summaries
