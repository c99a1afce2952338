"""What the viewer serves: the runs under one folder (or one run alone), opened by name from a URL.

Everything is read from disk on each request, through the project's run readers, so a run that is still
training shows its new epochs on refresh (its pages reload themselves meanwhile); nothing here writes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

from agenttrain.errors import UserError
from agenttrain.readback.history import Evaluation, load_evaluations
from agenttrain.readback.listing import RunSummary, summarise_run
from agenttrain.rundir.directory import EPOCH_PREFIX, RunDir, Snapshot, find_runs
from agenttrain.viewer.html import segment
from agenttrain.viewer.rollout_index import RolloutIndex, rollout_index
from agenttrain.viewer.urls import epoch_url, eval_name, eval_url, task_url


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
        if ("/" in name or "\0" in name or name in ("", ".", "..") or (self.only and name != self.only)
                or not (path / "run.json").is_file()):
            raise NotFound(f"no run named {name!r} under {self.directory}")
        if (leak := link_out_of(path, self.directory)) is not None:
            raise NotFound(f"{name}: {leak.relative_to(self.directory)} leads outside {self.directory}; the viewer "
                           "shows only files inside the runs folder")
        return RunDir(path)

    def rows(self) -> list[RunRow]:
        paths = [self.directory / self.only] if self.only else find_runs(self.directory)
        return [_row(self._summary(path)) for path in paths]

    def _summary(self, path: Path) -> RunSummary:
        """`agenttrain runs`' summary of a run, read only when all of it is inside the runs folder."""
        if link_out_of(path, self.directory) is not None:
            return RunSummary(run=str(path), status="unreadable", error="links outside the runs folder")
        try:
            return summarise_run(path)
        except UserError as exc:
            return RunSummary(run=str(path), status="unreadable", error=str(exc))


def link_out_of(run: Path, root: Path) -> Path | None:
    """The first file or folder of `run` (itself included) that resolves outside `root` through a symbolic link, or
    None: a run folder someone else made must not make the viewer serve what lies outside the runs folder."""
    seen: set[Path] = set()
    for folder, folders, files in os.walk(run, followlinks=True):
        real = Path(folder).resolve()
        if real in seen:  # a link back up the tree: walked already
            folders.clear()
            continue
        seen.add(real)
        if not real.is_relative_to(root):
            return Path(folder)
        for name in files:
            if not (Path(folder) / name).resolve().is_relative_to(root):
                return Path(folder) / name
    return None


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
    if not re.fullmatch(r"[0-9]{1,9}", epoch) or int(epoch) not in run.epochs():
        raise NotFound(f"{run.path.name} has no epoch {epoch}; its epochs are {run.epochs()}")
    return run.snapshot(int(epoch))


@dataclass(frozen=True)
class Rollouts:
    """One rollouts file shown as a table and as transcripts: an epoch's training rollouts or an evaluation's.

    `baseline` is what "flipped" compares with (the previous epoch; for an evaluation, epoch 0 on the same
    split); `siblings` are where the same task may be found again (the other epochs or evaluated epochs)."""

    title: str
    url: str
    path: Path
    version: int  # the run's format
    baseline: Rollouts | None = None
    siblings: tuple[Rollouts, ...] = ()

    @property
    def index(self) -> RolloutIndex:
        return rollout_index(self.path, self.version)

    def task_url(self, task: str) -> str:
        return task_url(self.url, task)

    def baseline_outcomes(self) -> dict[str, bool]:
        return {r.id: r.correct for r in self.baseline.index.rows} if self.baseline else {}


def _epoch_set(run: RunDir, epoch: int) -> Rollouts:
    return Rollouts(f"epoch {epoch}", epoch_url(run, epoch), run.path / f"{EPOCH_PREFIX}{epoch}" / "rollouts.jsonl",
                    run.format_version)


def epoch_rollouts(run: RunDir, epoch: int) -> Rollouts:
    epochs = run.epochs()
    earlier = [e for e in epochs if e < epoch]
    return replace(_epoch_set(run, epoch), baseline=_epoch_set(run, earlier[-1]) if earlier else None,
                   siblings=tuple(_epoch_set(run, e) for e in epochs if e != epoch))


def _eval_set(run: RunDir, evaluation: Evaluation) -> Rollouts:
    return Rollouts(f"{evaluation.split} · epoch {evaluation.epoch}", eval_url(run, evaluation),
                    evaluation.records_path, evaluation.format_version)


def evaluation_named(run: RunDir, name: str) -> tuple[Evaluation, Rollouts]:
    """The evaluation whose files are RUN/evals/<name>.json and <name>.rollouts.jsonl, with its rollouts."""
    evaluations = load_evaluations(run)
    found = next((e for e in evaluations if eval_name(e) == name), None)
    if found is None:
        raise NotFound(f"{run.path.name} has no evaluation {name!r}; it has {[eval_name(e) for e in evaluations]}")
    baseline = find_evaluation(evaluations, found.split, 0) if found.epoch else None
    same_split = [e for e in evaluations if e.split == found.split and e.epoch != found.epoch]
    return found, replace(_eval_set(run, found), baseline=_eval_set(run, baseline) if baseline else None,
                          siblings=tuple(_eval_set(run, e) for e in same_split))
