"""A running sweep as its folder shows it: runs done, training, trained and evaluating, failed and left; the
training runs' epochs; the spend so far and an ETA.

It reads only what the jobs write (OUT/sweep.json, each run's run.json, lock and evals/), so it works whatever runs
the jobs (`JobRunner`), and it hears each job's end from the sweep's `on_done`, which is how failures are known.
Progress is counted in rollouts: a job is its training epochs over the training split and its two test evaluations;
the ETA is the rollouts left at this invocation's pace (an early stop makes the wait shorter than said).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from agenttrain.errors import UserError
from agenttrain.readback.history import load_evaluations, usage_cost
from agenttrain.rundir.directory import RunDir, find_runs
from agenttrain.sweeping.job import DONE, EVALUATED_EPOCHS
from agenttrain.sweeping.plan import SweepJob
from agenttrain.sweeping.runners import JobOutcome
from agenttrain.wording import clock, plural


@dataclass(frozen=True)
class JobShape:
    """What one job runs, from its config."""

    id: str
    last_epoch: int
    train_rollouts: int  # per training epoch
    eval_rollouts: int  # per test evaluation (transfer tasks included)

    @property
    def rollouts(self) -> int:
        return (self.last_epoch + 1) * self.train_rollouts + len(EVALUATED_EPOCHS) * self.eval_rollouts

    @classmethod
    def of(cls, job: SweepJob) -> JobShape:
        experiment = job.experiment(check_files=False)
        task = experiment.task
        train, test = (min(size or 0, task.limit or size or 0) for size in (task.train_size, task.test_size))
        return cls(job.id, experiment.optimizer.epochs, train, test * (1 + len(job.transfer)))


@dataclass(frozen=True)
class RunState:
    """One job's run as its folder shows it."""

    training: bool  # a process holds its lock
    trained: bool
    evaluated: int  # of the epochs a sweep evaluates on test (0 and the best), how many are written
    to_evaluate: int  # 1 when the best epoch is epoch 0
    last_saved: int | None
    cost_usd: float  # training and evaluations

    @classmethod
    def of(cls, run: RunDir) -> RunState:
        info = run.info()
        evaluations = load_evaluations(run)
        wanted = {0, run.best_if_any()}
        evaluated = len(wanted & {e.epoch for e in evaluations if e.split == "test"})
        saved = info.epochs_done or 0
        return cls(run.locked_by() is not None, info.status in DONE, evaluated, len(wanted),
                   saved - 1 if saved else None, usage_cost(info.usage or {}) + sum(e.cost_usd for e in evaluations))

    @property
    def complete(self) -> bool:
        return self.trained and self.evaluated == self.to_evaluate

    def rollouts(self, shape: JobShape) -> int:
        """Done so far; a complete job counts whole, however early it stopped."""
        if self.complete:
            return shape.rollouts
        done_epochs = 0 if self.last_saved is None else self.last_saved + 1
        return done_epochs * shape.train_rollouts + self.evaluated * shape.eval_rollouts


@dataclass(frozen=True)
class SweepStatus:
    total: int
    done: int
    failed: int
    training: list[str]  # `job epoch k/N`
    evaluating: list[str]  # trained, their test evaluations not all written yet
    spent_usd: float
    eta_s: float | None

    @property
    def left(self) -> int:
        return self.total - self.done - self.failed - len(self.training) - len(self.evaluating)

    def line(self) -> str:
        """`sweep: 3 of 18 runs done, 2 training (a epoch 4/10, b epoch 1/10), 13 left; $1.23 spent; ETA 0:42:00`"""
        parts = [f"sweep: {self.done} of {plural(self.total, 'run')} done"]
        if self.training:
            parts.append(f"{len(self.training)} training ({', '.join(self.training)})")
        if self.evaluating:
            parts.append(f"{len(self.evaluating)} evaluating ({', '.join(self.evaluating)})")
        parts.append(f"{self.left} left")
        if self.failed:
            parts.append(f"{self.failed} failed")
        eta = "?" if self.eta_s is None else clock(self.eta_s)
        return ", ".join(parts) + f"; ${self.spent_usd:.2f} spent; ETA {eta}"


@dataclass
class SweepWatch:
    """The sweep writing to `out`: `status()` reads its folder afresh; `ended` hears each job's end."""

    out: Path
    _shapes: list[JobShape] = field(default_factory=list)
    _ended: dict[str, bool] = field(default_factory=dict)  # job id -> whether it ended well
    _started: float = field(default_factory=time.monotonic)
    _since: float = field(default_factory=time.time)  # an older sweep.json is an earlier invocation's
    _before: int | None = None  # rollouts done at the first look: earlier invocations' work, not this pace

    def ended(self, outcome: JobOutcome) -> None:
        self._ended[outcome.job.id] = outcome.ok

    def status(self) -> SweepStatus:
        shapes, runs = self._jobs(), self._runs()
        done, failed, rollouts, spent = 0, 0, 0, 0.0
        training: list[str] = []
        evaluating: list[str] = []
        for shape in shapes:
            state = runs.get(shape.id)
            ok = self._ended.get(shape.id)
            if state is not None:
                rollouts, spent = rollouts + state.rollouts(shape), spent + state.cost_usd
            if ok is not None:
                done, failed = done + ok, failed + (not ok)
            elif state is None:
                continue
            elif state.complete:
                done += 1
            elif state.training:
                last = "-" if state.last_saved is None else state.last_saved
                training.append(f"{shape.id} epoch {last}/{shape.last_epoch}")
            elif state.trained:
                evaluating.append(shape.id)
        eta = self._eta(rollouts, sum(shape.rollouts for shape in shapes))
        return SweepStatus(len(shapes), done, failed, training, evaluating, spent, eta)

    def _eta(self, done: int, total: int) -> float | None:
        if self._before is None:
            self._before = done
        ran = done - self._before
        return None if ran <= 0 else (time.monotonic() - self._started) / ran * max(total - done, 0)

    def _jobs(self) -> list[JobShape]:
        """The jobs of OUT/sweep.json as this invocation wrote it once the sweep was planned, read once."""
        path = self.out / "sweep.json"
        if not self._shapes and path.is_file() and path.stat().st_mtime >= self._since - 1:
            try:
                jobs = json.loads(path.read_text(encoding="utf-8"))["jobs"]
                self._shapes = [JobShape.of(SweepJob.from_dict(job)) for job in jobs]
            except (OSError, ValueError, KeyError, TypeError, UserError):
                return []  # not readable as a sweep's list of jobs: nothing to show yet
        return self._shapes

    def _runs(self) -> dict[str, RunState]:
        """Each job's run (named after the job), the newest where there are several; a damaged one is skipped."""
        found: dict[str, RunState] = {}
        for path in find_runs(self.out / "runs"):
            run = RunDir(path)
            try:
                found[run.info().name] = RunState.of(run)
            except UserError:
                continue
        return found
