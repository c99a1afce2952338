"""The report's PNG plots, drawn with matplotlib's object API (no pyplot: headless, no global state)."""

from __future__ import annotations

import textwrap
from itertools import cycle
from pathlib import Path
from typing import TYPE_CHECKING

from agenttrain.endpoint.usage import price_for
from agenttrain.readback.history import OUTCOMES, CallCount, RunHistory, role_cost, role_tokens
from agenttrain.registry import plots

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.axis import Axis
    from matplotlib.figure import Figure

EVAL_COLOURS = ("tab:orange", "tab:purple", "tab:brown", "tab:olive")  # distinct from the outcome colours


def _figure(width: float, height: float) -> Figure:
    # Imported here: matplotlib takes half a second to load and only the plots need it (not `agenttrain runs`).
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _integer_ticks(axis: Axis) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _integer_epochs(ax: Axes, epochs: list[int]) -> None:
    _integer_ticks(ax.xaxis)
    ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    ax.set_xlabel("epoch")


TITLE_CHARS_PER_INCH = 9  # at fontsize 10: a title wrapped at this many characters per inch of its axes fits them


def _run_title(history: RunHistory) -> str:
    """Which run a plot is from, so that a PNG shown on its own still says so."""
    experiment = history.run.experiment()
    return f"{history.run.path.name}: agent {experiment.agent.model}, optimizer {experiment.optimizer.model}"


def _fitted(title: str, inches: float) -> str:
    """`title` wrapped to lines that fit `inches` of width, so that a long run name is never cropped."""
    width = int(inches * TITLE_CHARS_PER_INCH)
    return "\n".join(textwrap.fill(line, width, break_long_words=True) for line in title.splitlines())


def _prices_known(history: RunHistory) -> dict[str, bool]:
    """Model -> whether it has a price (an unpriced model's cost is counted as $0)."""
    experiment = history.run.experiment()
    models = (experiment.agent.model, experiment.optimizer.model)
    return {model: price_for(model, experiment.prices()) is not None for model in models}


def _save(fig: Figure, path: Path, history: RunHistory) -> Path:
    fig.savefig(path, dpi=120, metadata={"Title": _run_title(history)})  # image viewers show it
    return path


@plots.register("learning_curve")
def plot_learning_curve(history: RunHistory, path: Path) -> Path:
    fig = _figure(8, 4.2)
    ax = fig.add_subplot()
    ax.step(history.epochs, [s.metrics.incumbent_accuracy for s in history.snapshots], where="post",
            color="0.55", linewidth=1.5, label="kept set (train)")
    for status, (label, marker, colour) in OUTCOMES.items():
        points = [(s.epoch, s.metrics.train_accuracy) for s in history.snapshots if s.metrics.status == status]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.scatter(xs, ys, marker=marker, color=colour, s=60, zorder=3, label=f"train: {label}")
    for shift, (split, colour) in enumerate(zip(history.eval_splits, cycle(EVAL_COLOURS)), start=1):
        evaluations = [e for e in history.evaluations if e.split == split]
        intervals = [e.ci95 or (e.accuracy, e.accuracy) for e in evaluations]
        below = [e.accuracy - low for e, (low, _) in zip(evaluations, intervals, strict=True)]
        above = [high - e.accuracy for e, (_, high) in zip(evaluations, intervals, strict=True)]
        # nudged sideways so a held-out point never hides the training marker of the same epoch
        ax.errorbar([e.epoch + 0.12 * shift for e in evaluations], [e.accuracy for e in evaluations],
                    yerr=[below, above], fmt="D--", color=colour, capsize=4, markersize=6,
                    label=f"{split} (95% Wilson CI)")
    _integer_epochs(ax, history.epochs)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("accuracy")
    ax.set_title(_fitted(f"Learning curve\n{_run_title(history)}", 6), fontsize=10)  # 2 of 8 inches: the legend
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return _save(fig, path, history)


@plots.register("function_usage")
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
            count = usage[name].get(epoch)
            if count:
                colour = "white" if count.calls > darkest * 0.6 else "black"
                ax.text(column, row, f"{count.ok}/{count.calls}", ha="center", va="center", color=colour, fontsize=9)
    ax.set_xticks(range(len(epochs)), labels=[str(e) for e in epochs])
    ax.set_yticks(range(len(names)), labels=names)
    ax.set_xlabel("epoch")
    ax.set_title("Function calls per epoch (successful/all)")
    _integer_ticks(fig.colorbar(image, ax=ax, label="calls").ax.yaxis)
    return _save(fig, path, history)


@plots.register("complexity")
def plot_complexity(history: RunHistory, path: Path) -> Path | None:
    """Each function's complexity over the epochs; drawn only when there are two values to compare
    (two functions, or one function in two epochs)."""
    series = {name: [(e, v) for e, v in sorted(by_epoch.items()) if v is not None]
              for name, by_epoch in history.complexity.items()}
    series = {name: points for name, points in series.items() if points}
    if sum(len(points) for points in series.values()) < 2:
        return None
    fig = _figure(7, 3.8)
    ax = fig.add_subplot()
    for name, points in series.items():
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o", label=name)
    _integer_epochs(ax, history.epochs)
    _integer_ticks(ax.yaxis)
    ax.set_ylabel("cyclomatic complexity")
    ax.set_title("Complexity of each function per epoch")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return _save(fig, path, history)


@plots.register("spend")
def plot_spend(history: RunHistory, path: Path) -> Path:
    """Tokens per epoch and role, and their cost beside them unless no model has a known price."""
    known = _prices_known(history)
    unpriced, priced = [model for model, ok in known.items() if not ok], any(known.values())
    fig = _figure(10 if priced else 6, 3.8)
    axes = fig.subplots(1, 2) if priced else [fig.add_subplot()]
    roles = sorted({role for s in history.snapshots for role in s.metrics.usage})
    panels = [(axes[0], "thousand tokens", "Tokens per epoch", lambda u: role_tokens(u) / 1000)]
    if priced:
        panels.append((axes[1], "US dollars", "Cost per epoch", role_cost))
    for ax, unit, title, measure in panels:
        bottom = [0.0] * len(history.snapshots)
        for role in roles:
            heights = [measure(s.metrics.usage.get(role, {})) for s in history.snapshots]
            ax.bar(history.epochs, heights, bottom=bottom, label=role)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        _integer_epochs(ax, history.epochs)
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    note = f"; cost: price unknown for {', '.join(unpriced)} (set llm.prices)" if unpriced else ""
    fig.suptitle(_fitted(_run_title(history) + note, (10 if priced else 6) - 1.5), fontsize=10)  # less the legend
    if roles:
        fig.legend(*axes[0].get_legend_handles_labels(), title="role", loc="outside right upper", frameon=False)
    return _save(fig, path, history)



