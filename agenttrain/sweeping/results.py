"""A sweep's table: one row per run and evaluated task, read back from the run directories (so the numbers are
those `agenttrain eval` wrote), saved as results.md, results.csv and results.json."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from statistics import mean
from typing import Any

from agenttrain.config import Experiment, load_experiment
from agenttrain.errors import UserError
from agenttrain.readback.history import Evaluation, load_evaluations
from agenttrain.readback.listing import summarise_run
from agenttrain.rundir.directory import RunDir, write_json_atomic, write_text_atomic
from agenttrain.stats import compare_outcomes
from agenttrain.sweeping.job import find_job_run
from agenttrain.sweeping.plan import SweepJob

METHODS = ("before: epoch 0 (no learned functions); after: the best epoch; both on the test split. Intervals: "
           "Wilson score for each accuracy, percentile bootstrap over tasks (paired, 10,000 resamples) for the "
           "difference; p: exact McNemar test on the tasks that changed outcome.")


@dataclass
class ResultRow:
    name: str  # the run's name: <entry>-s<seed>
    seed: int
    task: str  # the evaluated task: the trained one, or a transfer target
    trained_on: str
    agent: str
    setting: str  # how the functions were trained (method, mode, roll-back, batches)
    status: str
    best_epoch: int | None = None
    n: int | None = None
    before: float | None = None
    before_ci95: tuple[float, float] | None = None
    after: float | None = None
    after_ci95: tuple[float, float] | None = None
    difference: float | None = None
    difference_ci95: tuple[float, float] | None = None
    fixed: int | None = None
    broken: int | None = None
    p_value: float | None = None
    cost_usd: float = 0.0  # training and every evaluation of the run
    run: str | None = None
    config: str = ""
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def task_label(experiment: Experiment) -> str:
    types = getattr(experiment.task, "types", None)  # the math task's subjects; other tasks have none
    return f"{experiment.task.name} ({', '.join(types)})" if types else experiment.task.name


def setting_label(experiment: Experiment) -> str:
    optimizer = experiment.optimizer
    parts = [optimizer.method.replace("_", " ")]
    if not optimizer.roll_back:
        parts.append("no roll-back")
    if optimizer.batch_size is not None:
        parts.append(f"batch {optimizer.batch_size}")
    return ", ".join(parts)


def _compared(row: ResultRow, before: Evaluation | None, after: Evaluation | None) -> ResultRow:
    if before is None or after is None:
        return replace(row, error=row.error or "not evaluated yet (rerun the sweep)")
    comparison = compare_outcomes(before.records, after.records)
    return replace(row, n=after.n, before=before.accuracy, before_ci95=before.ci95, after=after.accuracy,
                   after_ci95=after.ci95, difference=comparison.difference,
                   difference_ci95=comparison.difference_ci95, fixed=comparison.fixed, broken=comparison.broken,
                   p_value=comparison.p_value)


def job_rows(job: SweepJob, error: str | None = None) -> list[ResultRow]:
    """The job's rows: its own test split, then each transfer task."""
    experiment = job.experiment()
    targets = [("", task_label(experiment))]
    for path in job.transfer:
        other = load_experiment(Path(path))
        targets.append((f"transfer-{other.name}-", task_label(other)))
    base: dict[str, Any] = {"name": job.id, "seed": experiment.task.seed, "trained_on": task_label(experiment),
                            "agent": f"{experiment.agent.type} ({experiment.agent.model})",
                            "setting": setting_label(experiment), "config": job.config}
    try:
        run = find_job_run(job)
    except UserError as exc:
        return [ResultRow(task=label, status="refused", error=str(exc), **base) for _, label in targets]
    if run is None:
        return [ResultRow(task=label, status="not started", error=error, **base) for _, label in targets]
    return _run_rows(run, targets, base, error)


def _run_rows(run: RunDir, targets: list[tuple[str, str]], base: dict[str, Any], error: str | None) -> list[ResultRow]:
    summary = summarise_run(run.path)
    evaluations = {(e.split, e.epoch): e for e in load_evaluations(run)}
    rows = []
    for prefix, label in targets:
        row = ResultRow(task=label, status=summary.status or "?", best_epoch=summary.best_epoch,
                        cost_usd=summary.cost_usd, run=str(run.path), error=error, **base)
        split = f"{prefix}test"
        best = None if summary.best_epoch is None else evaluations.get((split, summary.best_epoch))
        rows.append(_compared(row, evaluations.get((split, 0)), best))
    return rows


# -- writing the three files -----------------------------------------------------------------------------------

CSV_COLUMNS = ["name", "seed", "task", "trained_on", "agent", "setting", "status", "best_epoch", "n", "before",
               "before_ci_low", "before_ci_high", "after", "after_ci_low", "after_ci_high", "difference",
               "difference_ci_low", "difference_ci_high", "fixed", "broken", "p_value", "cost_usd", "run", "config",
               "error"]


def _flat(row: ResultRow) -> dict[str, Any]:
    data = row.to_dict()
    for key in ("before", "after", "difference"):
        interval = data.pop(f"{key}_ci95")
        data[f"{key}_ci_low"], data[f"{key}_ci_high"] = interval if interval else (None, None)
    return data


def _csv(rows: list[ResultRow]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(_flat(row) for row in rows)
    return buffer.getvalue()


def _percent(value: float | None, interval: tuple[float, float] | None = None) -> str:
    if value is None:
        return "–"
    shown = f"{100 * value:.1f}"
    return f"{shown} [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]" if interval else shown


def _points(value: float | None, interval: tuple[float, float] | None) -> str:
    if value is None:
        return "–"
    shown = f"{100 * value:+.1f}"
    return f"{shown} [{100 * interval[0]:+.1f}, {100 * interval[1]:+.1f}]" if interval else shown


def _markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _means(rows: list[ResultRow]) -> str | None:
    """Mean over seeds per (entry, task, setting), when some entry ran with more than one seed."""
    groups: dict[tuple[str, str, str, str], list[tuple[float, float, float]]] = defaultdict(list)
    for row in rows:
        if row.before is not None and row.after is not None and row.difference is not None:
            key = (row.name.rsplit("-s", 1)[0], row.task, row.agent, row.setting)
            groups[key].append((row.before, row.after, row.difference))
    if not any(len(group) > 1 for group in groups.values()):
        return None
    table = [[name, task, agent, setting, str(len(group)), _percent(mean(g[0] for g in group)),
              _percent(mean(g[1] for g in group)), _points(mean(g[2] for g in group), None)]
             for (name, task, agent, setting), group in groups.items()]
    return "## Mean over seeds\n\n" + _markdown_table(
        ["run", "task", "agent", "setting", "seeds", "before %", "after %", "difference (points)"], table)


def render_markdown(rows: list[ResultRow], out: Path) -> str:
    table = [[row.name, row.task, row.agent, row.setting, row.status, _percent(row.before, row.before_ci95),
              _percent(row.after, row.after_ci95), "–" if row.best_epoch is None else str(row.best_epoch),
              _points(row.difference, row.difference_ci95), "–" if row.p_value is None else f"{row.p_value:.3g}",
              "–" if row.n is None else str(row.n), f"{row.cost_usd:.2f}",
              _relative(row.run, out) if row.run else (row.error or "–")]
             for row in rows]
    headers = ["run", "task", "agent", "setting", "status", "before % [95% CI]", "after % [95% CI]", "best epoch",
               "difference (points) [95% CI]", "p", "test tasks", "cost $", "run directory"]
    parts = ["# Sweep results", METHODS, _markdown_table(headers, table), _means(rows)]
    problems = [f"- {row.name} ({row.task}): {row.error}" for row in rows if row.error]
    if problems:
        parts.append("## Problems\n\n" + "\n".join(problems))
    return "\n\n".join(p for p in parts if p) + "\n"


def _relative(path: str, out: Path) -> str:
    try:
        return str(Path(path).relative_to(out.resolve()))
    except ValueError:
        return path


def write_results(rows: list[ResultRow], out: Path) -> list[Path]:
    paths = [out / "results.md", out / "results.csv", out / "results.json"]
    write_text_atomic(paths[0], render_markdown(rows, out))
    write_text_atomic(paths[1], _csv(rows))
    write_json_atomic(paths[2], {"methods": METHODS, "rows": [row.to_dict() for row in rows]})
    return paths
