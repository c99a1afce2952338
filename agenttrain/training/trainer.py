"""The training loop: for each epoch the optimizer method runs (rollouts, a proposal, its verdict), and the loop
records it: the snapshot, the best epoch so far, the early-stop count, the journal a resume replays.

The loop knows no method by name (agenttrain.optimizers): it gives each one the same services (`Loop`) and
stops when the method's last epoch is done, when `optimizer.early_stop` epochs in a row did not improve, when
the budget is spent, or when the endpoint stays down past `llm.max_outage_s`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from agenttrain.endpoint.client import EndpointDown, LLMError
from agenttrain.endpoint.outage import OutageTimer
from agenttrain.endpoint.usage import BudgetExhausted, Usage
from agenttrain.errors import UserError
from agenttrain.functions import FunctionSet, InvalidFunction
from agenttrain.optimizers import make_optimizer
from agenttrain.optimizers.base import EpochOutcome, MethodParts, Proposal, Spent
from agenttrain.rundir.directory import RunDir
from agenttrain.rundir.records import Action, Best, EpochMetrics, RolloutRecord, summarise
from agenttrain.tasks.base import Example, Splits
from agenttrain.training.rollouts import Done, answered_rollouts
from agenttrain.training.runtime import Runtime


class Reporter(Protocol):
    """Progress display; the CLI draws it, tests pass None."""

    def run_started(self, epochs: int, next_epoch: int, sizes: str, resumed: bool, earlier_rollouts: int = 0
                    ) -> None: ...
    def epoch_started(self, epoch: int, phase: str, tasks: int, reused: int = 0, reused_correct: int = 0) -> None: ...
    def rollout_done(self, record: RolloutRecord, usage: Usage) -> None: ...
    def optimizer_started(self, epoch: int, max_actions: int) -> None: ...
    def optimizer_done(self, epoch: int, actions: list[Action], usage: Usage) -> None: ...
    def epoch_done(self, metrics: EpochMetrics) -> None: ...
    def waiting(self, message: str) -> None:
        """The endpoint is failing and the run waits before retrying (`message` says what and how long)."""


@dataclass
class Progress:
    """What the loop carries from epoch to epoch; read back from the last snapshot's metrics on resume."""

    next_epoch: int = 0
    stale: int = 0  # consecutive epochs without an improvement
    best_epoch: int = 0
    best_accuracy: float = -1.0
    best_reason: str = ""

    @classmethod
    def of(cls, run: RunDir) -> Progress:
        epochs = run.epochs()
        if not epochs:
            return cls()
        m = run.snapshot(epochs[-1]).metrics
        return cls(epochs[-1] + 1, m.stale, m.best_epoch, m.best_accuracy, m.best_reason or "")


@dataclass
class Journal:
    """What the events journal holds of unfinished epochs (from the next one on: a method may run several at
    once): finished rollouts per epoch and phase, and proposals per epoch and key. Rollouts that failed on the
    endpoint are left out, so a resume gives them another chance."""

    rollouts: dict[tuple[int, str], Done]
    proposals: dict[tuple[int, str], Proposal]

    @classmethod
    def of(cls, run: RunDir, first_epoch: int) -> Journal:
        journal = cls({}, {})
        where = run.path / "events.jsonl"
        for event in run.events():
            epoch = event.get("epoch")
            if not isinstance(epoch, int) or epoch < first_epoch:
                continue
            if event.get("event") == "rollout" and isinstance(event.get("phase"), str):
                record = RolloutRecord.read(event.get("record"), run.format_version, where)
                if not record.endpoint_failed:
                    journal.rollouts.setdefault((epoch, event["phase"]), {})[record.id] = record
            elif event.get("event") == "candidate":
                journal.proposals[epoch, str(event.get("key", "step"))] = _proposal(event, where)
        return journal

    def forget(self, epoch: int) -> None:
        """Drop a recorded epoch's work: its snapshot holds what it kept."""
        for table in (self.rollouts, self.proposals):
            for key in [k for k in table if k[0] == epoch]:
                del table[key]


def saved_rollouts(metrics: EpochMetrics) -> int:
    """Rollouts a recorded epoch ran; an older run did not count them: its training tasks, at least."""
    return metrics.rollouts if metrics.rollouts is not None else metrics.train_n


def score(outcome: EpochOutcome) -> float:
    """What an epoch is ranked by: validation accuracy where it ran there, else training accuracy."""
    return summarise(outcome.val_records if outcome.val_records is not None else outcome.records).accuracy


def _proposal(event: dict[str, Any], where: Path) -> Proposal:
    try:
        return Proposal.from_json(event)
    except (InvalidFunction, ValidationError, KeyError, TypeError) as exc:
        raise UserError(f"{where}: a journaled proposal agenttrain did not write ({exc!r}); remove that line to "
                        "ask the optimizer again") from None


class Trainer:
    def __init__(self, runtime: Runtime, run: RunDir, reporter: Reporter | None = None) -> None:
        self.rt = runtime
        self.run = run
        self.reporter = reporter
        self.config = runtime.experiment.optimizer
        self._splits = runtime.task.splits()
        parts = MethodParts(runtime.optimizer_client, self.config, runtime.sandbox, runtime.experiment.task.seed)
        self.method = make_optimizer(parts)
        self.outage = OutageTimer(runtime.experiment.llm.max_outage_s, getattr(reporter, "waiting", None))
        self.progress = Progress()
        self.journal = Journal({}, {})
        self._rollout_counts: dict[int, int] = {}  # rollouts each unrecorded epoch ran, every phase
        self._saved_rollouts = 0  # rollouts of the recorded epochs
        self._turns: dict[str, int] = {}  # each example's turns in its latest rollout: long ones start first

    async def fit(self) -> str:
        """Train until the method's epochs run out or early stop fires; returns the run's final status."""
        self.method.restore(self.run)
        self.progress = Progress.of(self.run)
        self._saved_rollouts = sum(saved_rollouts(self.run.snapshot(e).metrics) for e in self.run.epochs())
        if self.progress.next_epoch:
            self._turns.update((r.id, r.turns) for r in self.run.snapshot(self.progress.next_epoch - 1).rollouts())
        self.journal = Journal.of(self.run, self.progress.next_epoch)  # only unfinished epochs have journaled work
        last_epoch = self.method.last_epoch()
        if self.reporter:
            resumed = bool(self.progress.next_epoch or self.journal.rollouts or self.journal.proposals)
            self.reporter.run_started(last_epoch, self.progress.next_epoch, self._splits.describe(), resumed,
                                      self._saved_rollouts)
        if self.progress.best_reason:  # a process killed between a snapshot and best.json left it behind
            self._set_best()
        try:
            while self.progress.next_epoch <= last_epoch:
                if self.progress.stale >= self.config.early_stop:
                    return self._stop("early_stopped", f"{self.progress.stale} epochs in a row without improvement")
                if reason := self._budget_spent():
                    return self._stop("finished", reason)
                started, usage_before = time.monotonic(), self.rt.meter.by_role()
                for outcome in await self.method.run_epochs(self, self.progress.next_epoch):
                    self._record(outcome, time.monotonic() - started, usage_before)
                    self.journal.forget(outcome.epoch)
                    started, usage_before = time.monotonic(), self.rt.meter.by_role()
        except BudgetExhausted as exc:
            return self._stop("budget_exhausted", str(exc))
        except EndpointDown as exc:
            return self._stop("failed", f"{exc}; fix the cause, then continue with --resume")
        return self._stop("finished", self.method.finished())

    # -- the services a method uses (optimizers.base.Loop) ------------------------------------------------

    @property
    def splits(self) -> Splits:
        return self._splits

    @property
    def best_accuracy(self) -> float:
        return self.progress.best_accuracy

    def spent(self) -> Spent:
        total = self.rt.meter.total()
        return Spent(self._saved_rollouts + sum(self._rollout_counts.values()), total.total_tokens, total.cost_usd)

    def _budget_spent(self) -> str | None:
        """Why `optimizer.budget` stops the run now, if it does."""
        budget, spent = self.config.budget, self.spent()
        for key, used, limit in (("rollouts", spent.rollouts, budget.rollouts), ("tokens", spent.tokens, budget.tokens),
                                 ("usd", spent.usd, budget.usd)):
            if limit is not None and used >= limit:
                return (f"optimizer.budget.{key} spent ({used:g} of {limit:g}); to go on: agenttrain train --resume "
                        f"RUN --set optimizer.budget.{key}=MORE")
        return None

    async def rollouts(self, epoch: int, phase: str, functions: FunctionSet, examples: Sequence[Example]
                       ) -> list[RolloutRecord]:
        done = self.journal.rollouts.get((epoch, phase), {})
        self._rollout_counts[epoch] = self._rollout_counts.get(epoch, 0) + len(examples)
        if self.reporter:
            reused = [done[e.id].correct for e in examples if e.id in done]
            self.reporter.epoch_started(epoch, phase, len(examples), len(reused), sum(reused))

        def on_record(record: RolloutRecord) -> None:
            self.run.log("rollout", epoch=epoch, phase=phase, record=record.to_json(), usage=self._usage())
            if self.reporter and not record.endpoint_failed:  # that one is retried: not done yet
                self.reporter.rollout_done(record, self.rt.meter.total())

        records = await answered_rollouts(
            self.rt.executor, self._longest_first(examples), functions, self.outage, on_record, done
        )
        self._turns.update((r.id, r.turns) for r in records)
        by_id = {r.id: r for r in records}
        return [by_id[e.id] for e in examples]

    async def proposal(self, epoch: int, key: str, propose: Callable[[], Awaitable[Proposal]]) -> Proposal:
        """The method's proposal; one the endpoint failed is tried again until the outage limit."""
        if (epoch, key) in self.journal.proposals:
            return self.journal.proposals[epoch, key]
        if self.reporter:
            self.reporter.optimizer_started(epoch, self.config.max_actions)
        while True:
            try:
                proposal = await propose()
                break
            except LLMError as exc:
                await self.outage.wait("the optimizer step", str(exc))
        self.outage.progressed()
        if self.reporter:
            self.reporter.optimizer_done(epoch, proposal.actions, self.rt.meter.total())
        self.run.log("candidate", epoch=epoch, key=key, **proposal.to_json(), usage=self._usage())
        return proposal

    def _longest_first(self, examples: Sequence[Example]) -> list[Example]:
        """The examples whose last rollout took the most turns first: an epoch ends when its longest rollout
        does, so starting those early shortens the tail in which only a few rollouts are left running."""
        return sorted(examples, key=lambda e: -self._turns.get(e.id, 0))

    # -- recording an epoch -----------------------------------------------------------------------------

    def _record(self, outcome: EpochOutcome, duration_s: float, usage_before: dict[str, Usage]) -> None:
        """Update the counters, then write the snapshot before best.json, so best.json never names a missing one."""
        progress = self.progress
        self._turns.update((r.id, r.turns) for r in outcome.records)
        progress.stale = 0 if outcome.status == "baseline" or outcome.improved else progress.stale + 1
        accuracy = summarise(outcome.records).accuracy
        if outcome.best is not None:  # the method names the best epoch, this one or an earlier one
            progress.best_epoch, progress.best_accuracy = outcome.best.epoch, outcome.best.score
            progress.best_reason = outcome.best.reason
        elif outcome.best_reason:
            progress.best_epoch, progress.best_accuracy = outcome.epoch, score(outcome)
            progress.best_reason = outcome.best_reason
        metrics = self._metrics(outcome, duration_s, usage_before)
        self.run.save_snapshot(outcome.functions, metrics, outcome.records, outcome.val_records)
        if outcome.best_reason or outcome.best is not None:
            self._set_best()
        self.run.log("epoch", epoch=outcome.epoch, status=outcome.status, train_accuracy=accuracy)
        self.run.update_info(usage=self._usage(), epochs_done=outcome.epoch + 1)
        progress.next_epoch = outcome.epoch + 1
        if self.reporter:
            self.reporter.epoch_done(metrics)

    def _count_rollouts(self, epoch: int) -> int:
        ran = self._rollout_counts.pop(epoch, 0)
        self._saved_rollouts += ran
        return ran

    def _set_best(self) -> None:
        p = self.progress
        selected_by = "val" if self.run.snapshot(p.best_epoch).metrics.val_n is not None else "train"
        self.run.set_best(Best(epoch=p.best_epoch, train_accuracy=p.best_accuracy, selected_by=selected_by,
                               reason=p.best_reason))

    def _metrics(self, outcome: EpochOutcome, duration_s: float, usage_before: dict[str, Usage]) -> EpochMetrics:
        summary, progress = summarise(outcome.records), self.progress
        val = summarise(outcome.val_records) if outcome.val_records is not None else None
        if outcome.usage is not None:
            usage = {role: u.to_dict() for role, u in outcome.usage.items()}
        else:
            usage_after = self.rt.meter.by_role()
            usage = {role: (usage_after[role] - usage_before.get(role, Usage())).to_dict() for role in usage_after}
        return EpochMetrics(
            epoch=outcome.epoch,
            status=outcome.status,
            accepted=outcome.status in ("baseline", "accepted"),
            train_accuracy=summary.accuracy,
            train_correct=summary.correct,
            train_n=summary.n,
            train_accuracy_strict=summary.accuracy_strict,
            train_errors=summary.errors,
            incumbent_accuracy=outcome.incumbent_accuracy,
            val_accuracy=val.accuracy if val else None,
            val_correct=val.correct if val else None,
            val_n=val.n if val else None,
            rollouts=self._count_rollouts(outcome.epoch),
            candidate=outcome.candidate,
            function_count=len(outcome.functions),
            actions=outcome.actions,
            prompt_cuts=outcome.prompt_cuts,
            comparison=outcome.comparison,
            attribution=outcome.attribution,
            stale=progress.stale,
            best_epoch=progress.best_epoch,
            best_accuracy=progress.best_accuracy,
            best_reason=progress.best_reason or None,
            usage=usage,
            duration_s=round(duration_s, 3),
        )

    # -- stopping ---------------------------------------------------------------------------------------

    def _usage(self) -> dict[str, dict[str, Any]]:
        """What the run has spent so far, per role; journaled with every event so a resume counts it all."""
        return {role: u.to_dict() for role, u in self.rt.meter.by_role().items()}

    def _stop(self, status: str, reason: str) -> str:
        self.run.log("stop", status=status, reason=reason)
        self.run.finish(status, reason=reason, usage=self._usage())
        return status
