"""A run read back for people: epochs, evaluations, function lineage and usage, spend, tasks never solved.

Everything comes from the run directory (snapshots, metrics, rollouts, evals/), so it works for a run that
is still training, was interrupted, or was copied from another machine.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from agenttrain.errors import UserError
from agenttrain.readback.complexity import cyclomatic_complexity
from agenttrain.rundir.directory import RunDir, Snapshot, read_rollouts, read_run_json
from agenttrain.rundir.records import Action, EpochMetrics, EvalResult, RolloutRecord
from agenttrain.stats import PairedComparison, compare_outcomes, wilson_interval
from agenttrain.wording import plural

# How each epoch outcome is drawn and named: (label, marker, colour).
OUTCOMES = {
    "baseline": ("baseline", "o", "tab:blue"),
    "accepted": ("accepted", "o", "tab:green"),
    "rolled_back": ("rolled back", "X", "tab:red"),
    "unchanged": ("unchanged", "s", "tab:gray"),
}
ACTION_VERBS = {"add_function": "added", "revise_function": "revised", "remove_function": "removed"}


# -- reading usage blocks ({role: {prompt_tokens, completion_tokens, cost_usd, ...}}) ---------------------------


def role_tokens(usage: dict[str, Any]) -> int:
    return usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)


def role_cost(usage: dict[str, Any]) -> float:
    return usage.get("cost_usd", 0.0)


def usage_tokens(by_role: dict[str, dict[str, Any]]) -> int:
    return sum(role_tokens(u) for u in by_role.values())


def usage_cost(by_role: dict[str, dict[str, Any]]) -> float:
    return sum(role_cost(u) for u in by_role.values())


def usage_sum(by_role: dict[str, dict[str, Any]], field: str) -> float:
    """One count summed over roles, e.g. `reasoning_tokens`; 0 where a role (or an older run) lacks it."""
    return sum(u.get(field, 0) for u in by_role.values())


def outcome_label(status: str) -> str:
    return OUTCOMES[status][0] if status in OUTCOMES else status


# -- what the optimizer did ---------------------------------------------------------------------------------


def action_outcome(actions: Sequence[Action]) -> str:
    """What an optimizer step did, never hiding a failure: `2 actions proposed, 1 applied; rejected: <why> (x2)`.
    "no change proposed" only when the model itself said TERMINATE."""
    edits = [a for a in actions if a.action != "terminate"]
    applied = sum(1 for a in edits if a.status == "applied")
    reasons = Counter(a.error or "no reason given" for a in actions if a.status == "rejected")
    parts = [f"{plural(len(edits), 'action')} proposed, {applied} applied"] if edits else []
    if reasons:
        parts.append("rejected: " + "; ".join(f"{why} (x{n})" if n > 1 else why for why, n in reasons.items()))
    return "; ".join(parts) or "no change proposed"


def optimizer_note(metrics: EpochMetrics) -> str | None:
    """One epoch's optimizer step in a line: its outcome, and what its prompt left out to fit the model's context
    (None for the baseline, which has no step)."""
    if metrics.status == "baseline":
        return None
    cuts = f"; prompt cut to fit: {'; '.join(metrics.prompt_cuts)}" if metrics.prompt_cuts else ""
    return action_outcome(metrics.actions) + cuts


# -- what the run holds -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """One result of `agenttrain eval`, as written under RUN/evals/<split>-epoch-N.json."""

    split: str  # as in the file name, so a transfer eval ("transfer-<name>-test") is not mistaken for "test"
    epoch: int
    accuracy: float
    correct: int
    n: int
    cost_usd: float
    records_path: Path
    format_version: int
    accuracy_strict: float | None = None  # for scorers that have a strict verdict (names.STRICT_MEANING)

    @cached_property
    def records(self) -> list[RolloutRecord]:
        return read_rollouts(self.records_path, self.format_version)

    @property
    def ci95(self) -> tuple[float, float] | None:
        """Wilson score interval (see stats.wilson_interval)."""
        return wilson_interval(self.correct, self.n) if self.n else None


def load_evaluations(run: RunDir) -> list[Evaluation]:
    """Every RUN/evals/<split>-epoch-N.json, ordered by split then epoch."""
    evaluations = []
    version = run.format_version
    for path in run.evals_dir.glob("*-epoch-*.json"):
        result = EvalResult.read(read_run_json(path), version, path)
        evaluations.append(Evaluation(
            split=path.stem.rsplit("-epoch-", 1)[0], epoch=result.epoch, accuracy=result.accuracy,
            correct=result.correct, n=result.n, cost_usd=usage_cost(result.usage),
            records_path=path.with_name(f"{path.stem}.rollouts.jsonl"), format_version=version,
            accuracy_strict=result.accuracy_strict,
        ))
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
            LineageEvent(s.epoch, s.metrics.status, ACTION_VERBS[a.action], a.name or "", a.reason)
            for s in self.snapshots
            for a in s.metrics.actions
            if a.status == "applied" and a.action in ACTION_VERBS
        ]

    @cached_property
    def function_usage(self) -> dict[str, dict[int, CallCount]]:
        """Calls the agent made per function name and epoch (names it invented included: they show confusion)."""
        usage: dict[str, dict[int, CallCount]] = defaultdict(dict)
        for epoch, records in self.rollouts.items():
            for record in records:
                for call in record.function_calls:
                    seen = usage[call.name].get(epoch, CallCount())
                    usage[call.name][epoch] = seen + CallCount(1, int(call.ok))
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
    def always_wrong(self) -> list[RolloutRecord]:
        """The latest record of every training task that no epoch solved, in order of first appearance."""
        latest: dict[str, RolloutRecord] = {}
        solved: set[str] = set()
        for epoch in self.epochs:
            for record in self.rollouts[epoch]:
                latest[record.id] = record
                if record.correct:
                    solved.add(record.id)
        return [r for task, r in latest.items() if task not in solved]

    @cached_property
    def task_count(self) -> int:
        return len({r.id for records in self.rollouts.values() for r in records})

    def comparisons_with_baseline(self) -> list[tuple[Evaluation, PairedComparison]]:
        """Each evaluated epoch against epoch 0 on the same split, paired by task."""
        found = []
        for evaluation in self.evaluations:
            baseline = self.evaluation(evaluation.split, 0)
            if baseline is not None and evaluation.epoch != 0:
                found.append((evaluation, compare_outcomes(baseline.records, evaluation.records)))
        return found

