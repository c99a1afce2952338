"""What the viewer serves: the runs under one folder (or one run alone), opened by name from a URL.

Everything is read from disk on each request, through the project's run readers, so a run that is still
training shows its new epochs on refresh; nothing here writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agenttrain.errors import UserError
from agenttrain.history import Evaluation, load_evaluations
from agenttrain.listing import RunSummary, list_runs, summarise_run
from agenttrain.runs import RunDir, Snapshot
from agenttrain.viewer.html import segment
from agenttrain.viewer.rollout_index import RolloutIndex, rollout_index


class NotFound(Exception):
    """A URL that names no run, epoch or task; shown as a 404 page with the message."""


@dataclass(frozen=True)
class RunRow:
    """One line of the runs list: `agenttrain runs`' summary plus what the page also shows."""

    name: str
    summary: RunSummary
    task: str | None
    agent: str | None
    test_ci95: tuple[float, float] | None


class Site:
    def __init__(self, directory: Path, only: str | None = None) -> None:
        """`directory` holds run folders; `only` limits the site to one of them (`agenttrain view RUN`)."""
        self.directory = directory.resolve()
        self.only = only

    @classmethod
    def for_path(cls, path: Path) -> Site:
        """A run directory (shown alone) or a folder of runs."""
        if not path.is_dir():
            raise UserError(f"{path}: no such folder; give a run directory or the folder that holds runs")
        if (path / "run.json").exists():
            return cls(path.resolve().parent, only=path.resolve().name)
        return cls(path)

    def start_path(self) -> str:
        return f"/runs/{segment(self.only)}/" if self.only else "/"

    def run(self, name: str) -> RunDir:
        """The run called `name`: a direct child of the folder, never a path that climbs out of it."""
        path = self.directory / name
        if ("/" in name or name in ("", ".", "..") or (self.only and name != self.only)
                or not (path / "run.json").is_file()):
            raise NotFound(f"no run named {name!r} under {self.directory}")
        return RunDir(path)

    def rows(self) -> list[RunRow]:
        summaries = [_summary_or_error(self.directory / self.only)] if self.only else list_runs(self.directory)
        return [_row(s) for s in summaries]


def _summary_or_error(path: Path) -> RunSummary:
    try:
        return summarise_run(path)
    except UserError as exc:
        return RunSummary(run=str(path), status="unreadable", error=str(exc))


def _row(summary: RunSummary) -> RunRow:
    run = RunDir(Path(summary.run))
    task = agent = None
    ci = None
    if summary.error is None:
        try:
            experiment = run.experiment()
            task, agent = experiment.task.name, f"{experiment.agent.type} · {experiment.agent.model}"
        except UserError:
            pass  # a damaged config.yaml: the row still shows what run.json holds
        test = find_evaluation(load_evaluations(run), "test", summary.test_epoch)
        ci = test.ci95 if test else None
    return RunRow(Path(summary.run).name, summary, task, agent, ci)


def find_evaluation(evaluations: list[Evaluation], split: str, epoch: int | None) -> Evaluation | None:
    return next((e for e in evaluations if (e.split, e.epoch) == (split, epoch)), None)


def snapshot(run: RunDir, epoch: str) -> Snapshot:
    if not epoch.isdigit() or int(epoch) not in run.epochs():
        raise NotFound(f"{run.path.name} has no epoch {epoch}; its epochs are {run.epochs()}")
    return run.snapshot(int(epoch))


def rollouts(snap: Snapshot) -> RolloutIndex:
    return rollout_index(snap.path / "rollouts.jsonl")


def previous_epoch(run: RunDir, epoch: int) -> int | None:
    """The epoch before `epoch` that was saved, for "flipped" (outcome changed since the previous epoch)."""
    earlier = [e for e in run.epochs() if e < epoch]
    return earlier[-1] if earlier else None
