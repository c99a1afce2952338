"""The epoch loop (paper, Algorithm 2): evaluate, let the optimizer edit, accept or roll back, early-stop.

Every iteration counts as an epoch (the paper's pseudo-code counts only accepted ones, so its early-stop
could never fire with E = C). Acceptance needs a strict improvement of training accuracy; ties roll back.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from agenttrain.config import OptimizerConfig
from agenttrain.endpoint.client import EndpointDown, LLMClient, LLMError
from agenttrain.endpoint.outage import OutageTimer
from agenttrain.endpoint.usage import BudgetExhausted, Usage
from agenttrain.functions import FunctionSet
from agenttrain.optimizers.list_writers import AllAtOnceOptimizer, ToolCreator, breaking_functions
from agenttrain.optimizers.progressive import ActionRecord, AgentOptimizer, StepResult, TrainingRecord
from agenttrain.rundir.directory import RunDir
from agenttrain.rundir.records import Action, Best, EpochMetrics, EpochStatus
from agenttrain.sandbox import Sandbox
from agenttrain.tasks.base import Example
from agenttrain.training.rollouts import endpoint_failed, evaluate_answered, summarise
from agenttrain.training.runtime import Runtime


class Reporter(Protocol):
    """Progress display; the CLI draws it, tests pass None."""

    def run_started(self, epochs: int, next_epoch: int, sizes: str, resumed: bool) -> None: ...
    def epoch_started(self, epoch: int, phase: str, tasks: int, reused: int = 0, reused_correct: int = 0) -> None: ...
    def rollout_done(self, record: dict[str, Any], usage: Usage) -> None: ...
    def optimizer_started(self, epoch: int, max_actions: int) -> None: ...
    def optimizer_done(self, epoch: int, actions: list[dict[str, Any]], usage: Usage) -> None: ...
    def epoch_done(self, metrics: EpochMetrics) -> None: ...
    def waiting(self, message: str) -> None:
        """The endpoint is failing and the run waits before retrying (`message` says what and how long)."""


@dataclass
class TrainState:
    """What the loop carries from epoch to epoch; rebuilt from the snapshots on resume."""

    incumbent: FunctionSet = field(default_factory=FunctionSet)
    incumbent_accuracy: float = 0.0
    incumbent_records: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[FunctionSet, float]] = field(default_factory=list)
    stale: int = 0  # consecutive epochs without a strict improvement
    best_epoch: int = 0
    best_accuracy: float = -1.0
    best_reason: str = ""
    next_epoch: int = 0


def training_records(records: Sequence[dict[str, Any]]) -> list[TrainingRecord]:
    return [TrainingRecord(r["id"], bool(r["correct"]), r["messages"]) for r in records]


def state_from_run(run: RunDir) -> TrainState:
    """Replay the saved epochs' metrics: the incumbent is the last accepted set, `rejected` what came after it."""
    state = TrainState()
    for epoch in run.epochs():
        snapshot = run.snapshot(epoch)
        metrics = snapshot.metrics
        if metrics.status in ("baseline", "accepted"):
            state.incumbent, state.incumbent_accuracy = snapshot.functions, metrics.train_accuracy
            state.incumbent_records, state.rejected = snapshot.rollouts(), []
        elif metrics.status == "rolled_back":
            state.rejected.append((snapshot.functions, metrics.train_accuracy))
        state.stale, state.best_epoch = metrics.stale, metrics.best_epoch
        state.best_accuracy, state.best_reason = metrics.best_accuracy, metrics.best_reason or ""
        state.next_epoch = epoch + 1
    return state


def make_optimizer(client: LLMClient, config: OptimizerConfig, sandbox: Sandbox) -> AgentOptimizer:
    """The optimizer the config asks for: the paper's one action at a time, the whole list at once, or tool
    creation (one pass, see list_writers)."""
    if config.method == "tool_creation":
        return ToolCreator(client, config, sandbox)
    if config.mode == "all_at_once":
        return AllAtOnceOptimizer(client, config, sandbox)
    return AgentOptimizer(client, config, sandbox)


@dataclass
class EpochOutcome:
    """One epoch's result before it is recorded: the set that was evaluated, its records, and the verdict."""

    epoch: int
    functions: FunctionSet
    records: list[dict[str, Any]]
    status: EpochStatus
    actions: list[ActionRecord] = field(default_factory=list)
    improved: bool = False


class Trainer:
    def __init__(self, runtime: Runtime, run: RunDir, reporter: Reporter | None = None) -> None:
        self.rt = runtime
        self.run = run
        self.reporter = reporter
        self.config = runtime.experiment.optimizer
        self.splits = runtime.task.splits()
        self.optimizer = make_optimizer(runtime.optimizer_client, self.config, runtime.sandbox)
        self.creating = self.config.method == "tool_creation"
        self.last_epoch = 1 if self.creating else self.config.epochs  # tool creation: baseline, created set
        self.outage = OutageTimer(runtime.experiment.llm.max_outage_s, getattr(reporter, "waiting", None))
        self._turns: dict[str, int] = {}  # each example's turns in its latest rollout: long ones start first

    async def fit(self, state: TrainState | None = None) -> str:
        """Train until the epochs run out or early-stop fires; returns the run's final status."""
        state = state or TrainState()
        self._remember_turns(state.incumbent_records)
        journal = self._journal(state.next_epoch)  # only an interrupted epoch can have journaled work
        if self.reporter:
            resumed = bool(state.next_epoch or journal)
            self.reporter.run_started(self.config.epochs, state.next_epoch, self.splits.describe(), resumed)
        if state.best_reason:  # a process killed between a snapshot and best.json left it behind
            self.run.set_best(Best(epoch=state.best_epoch, train_accuracy=state.best_accuracy,
                                   reason=state.best_reason))
        try:
            while state.next_epoch <= self.last_epoch:
                if state.stale >= self.config.early_stop:
                    return self._stop("early_stopped", f"{state.stale} epochs in a row without improvement")
                await self._run_epoch(state, journal)
                journal = {}
        except BudgetExhausted as exc:
            return self._stop("budget_exhausted", str(exc))
        except EndpointDown as exc:
            return self._stop("failed", f"{exc}; fix the cause, then continue with --resume")
        if self.creating:
            return self._stop("finished", "created the function set in one pass (tool_creation)")
        return self._stop("finished", f"ran {self.config.epochs} epochs")

    # -- one epoch --------------------------------------------------------------------------------------

    async def _run_epoch(self, state: TrainState, journal: dict[str, Any]) -> None:
        started, usage_before = time.monotonic(), self.rt.meter.by_role()
        if state.next_epoch == 0:
            outcome = await self._baseline(state, journal)
        elif self.creating:
            outcome = await self._create(state, journal)
        else:
            outcome = await self._epoch(state, journal)
        self._record(state, outcome, time.monotonic() - started, usage_before)

    async def _baseline(self, state: TrainState, journal: dict[str, Any]) -> EpochOutcome:
        """Epoch 0: the agent with no learned functions; always accepted."""
        records = await self._evaluate(0, "candidate", state.incumbent, self.splits.train, journal)
        state.incumbent_accuracy, state.incumbent_records = summarise(records)["accuracy"], records
        return EpochOutcome(0, state.incumbent, records, "baseline")

    async def _epoch(self, state: TrainState, journal: dict[str, Any]) -> EpochOutcome:
        epoch = state.next_epoch
        batch = self._batch(epoch)
        reference_records = await self._reference(state, epoch, batch, journal)
        reference = summarise(reference_records)["accuracy"] if self._same_batch else state.incumbent_accuracy
        step = journal.get("step") or await self._step(state, epoch, reference, reference_records)
        if step.functions == state.incumbent:  # TERMINATE or only rejected actions: nothing new to evaluate
            return EpochOutcome(epoch, state.incumbent, reference_records, "unchanged", step.actions)
        records = await self._evaluate(epoch, "candidate", step.functions, batch, journal)
        accuracy = summarise(records)["accuracy"]
        improved = accuracy > reference
        if improved or not self.config.roll_back:
            state.incumbent, state.incumbent_accuracy, state.incumbent_records = step.functions, accuracy, records
            state.rejected = []
            return EpochOutcome(epoch, step.functions, records, "accepted", step.actions, improved)
        state.rejected.append((step.functions, accuracy))
        return EpochOutcome(epoch, step.functions, records, "rolled_back", step.actions)

    async def _create(self, state: TrainState, journal: dict[str, Any]) -> EpochOutcome:
        """Tool creation: write functions from the baseline once, run them on the training tasks, drop those that
        break a task they were written for, and rerun the training tasks with what is left (if anything left)."""
        epoch, train = state.next_epoch, list(self.splits.train)
        step = journal.get("step") or await self._step(state, epoch, state.incumbent_accuracy, state.incumbent_records)
        if step.functions == state.incumbent:
            return EpochOutcome(epoch, state.incumbent, state.incumbent_records, "unchanged", step.actions)
        records = await self._evaluate(epoch, "candidate", step.functions, train, journal)
        dropped = breaking_functions(step.actions, state.incumbent_records, records)
        functions = FunctionSet(tuple(f for f in step.functions if f.name not in dropped))
        actions = [replace(a, status="rejected", error=f"dropped: {dropped[a.name]}")
                   if a.status == "applied" and a.name in dropped else a for a in step.actions]
        if dropped and functions == state.incumbent:
            return EpochOutcome(epoch, state.incumbent, state.incumbent_records, "unchanged", actions)
        if dropped:
            records = await self._evaluate(epoch, "kept", functions, train, journal)
        state.incumbent, state.incumbent_records = functions, records
        state.incumbent_accuracy = summarise(records)["accuracy"]
        return EpochOutcome(epoch, functions, records, "accepted", actions, improved=True)

    @property
    def _same_batch(self) -> bool:
        return self.config.batch_size is not None and self.config.batch_compare == "same_batch"

    def _batch(self, epoch: int) -> list[Example]:
        """The whole training split, or a seeded sample of it per epoch (batch training)."""
        train = self.splits.train
        if self.config.batch_size is None or self.config.batch_size >= len(train):
            return list(train)
        rng = random.Random(f"{self.rt.experiment.task.seed}-{epoch}")
        return rng.sample(train, self.config.batch_size)

    async def _reference(
        self, state: TrainState, epoch: int, batch: list[Example], journal: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """The incumbent's records that the optimizer reads and the candidate is compared with."""
        if not self._same_batch:
            return state.incumbent_records
        return await self._evaluate(epoch, "incumbent", state.incumbent, batch, journal)

    async def _step(
        self, state: TrainState, epoch: int, reference: float, records: list[dict[str, Any]]
    ) -> StepResult:
        """The optimizer's edit; a step the endpoint failed is tried again until the outage limit."""
        if self.reporter:
            self.reporter.optimizer_started(epoch, self.config.max_actions)
        while True:
            try:
                step = await self.optimizer.step(
                    state.incumbent, reference, training_records(records), state.rejected, epoch
                )
                break
            except LLMError as exc:
                await self.outage.wait("the optimizer step", str(exc))
        self.outage.progressed()
        if self.reporter:
            self.reporter.optimizer_done(epoch, [a.to_dict() for a in step.actions], self.rt.meter.total())
        self.run.log("candidate", epoch=epoch, functions=step.functions.to_json(),
                     actions=[a.to_dict() for a in step.actions], usage=self._usage())
        return step

    async def _evaluate(
        self, epoch: int, phase: str, functions: FunctionSet, examples: list[Example], journal: dict[str, Any]
    ) -> list[dict[str, Any]]:
        done = journal.get(phase, {})
        if self.reporter:
            reused = [bool(done[e.id]["correct"]) for e in examples if e.id in done]
            self.reporter.epoch_started(epoch, phase, len(examples), len(reused), sum(reused))

        def on_record(record: dict[str, Any]) -> None:
            self.run.log("rollout", epoch=epoch, phase=phase, record=record, usage=self._usage())
            if self.reporter and not endpoint_failed(record):  # that one is retried: not done yet
                self.reporter.rollout_done(record, self.rt.meter.total())

        records = await evaluate_answered(
            self.rt.executor, self._longest_first(examples), functions, self.outage, on_record, done
        )
        self._remember_turns(records)
        by_id = {r["id"]: r for r in records}
        return [by_id[e.id] for e in examples]

    def _longest_first(self, examples: list[Example]) -> list[Example]:
        """The examples whose last rollout took the most turns first: an epoch ends when its longest rollout
        does, so starting those early shortens the tail in which only a few rollouts are left running."""
        return sorted(examples, key=lambda e: -self._turns.get(e.id, 0))

    def _remember_turns(self, records: Sequence[dict[str, Any]]) -> None:
        self._turns.update((r["id"], r["turns"]) for r in records)

    # -- recording an epoch -----------------------------------------------------------------------------

    def _record(self, state: TrainState, outcome: EpochOutcome, duration_s: float, usage_before: dict[str, Usage]
                ) -> None:
        """Update the counters, then write the snapshot before best.json, so best.json never names a missing one."""
        summary = summarise(outcome.records)
        accuracy = summary["accuracy"]
        state.stale = 0 if outcome.status == "baseline" or outcome.improved else state.stale + 1
        best_reason = self._best_reason(state, outcome, accuracy)
        if best_reason:
            state.best_epoch, state.best_accuracy, state.best_reason = outcome.epoch, accuracy, best_reason
        metrics = self._metrics(state, outcome, summary, duration_s, usage_before)
        self.run.save_snapshot(outcome.functions, metrics, outcome.records)
        if best_reason:
            self.run.set_best(Best(epoch=outcome.epoch, train_accuracy=accuracy, reason=best_reason))
        self.run.log("epoch", epoch=outcome.epoch, status=outcome.status, train_accuracy=accuracy)
        self.run.update_info(usage=self._usage(), epochs_done=outcome.epoch + 1)
        state.next_epoch = outcome.epoch + 1
        if self.reporter:
            self.reporter.epoch_done(metrics)

    def _best_reason(self, state: TrainState, outcome: EpochOutcome, accuracy: float) -> str | None:
        """Why this epoch becomes the best one, or None. Batch accuracies are not comparable across batches,
        so with batch training the latest accepted set is the best: it won against its predecessor."""
        if outcome.status not in ("baseline", "accepted"):
            return None
        if self.creating and outcome.epoch > 0:
            return "the created set (tool creation keeps it without comparing with the baseline)"
        if not self.config.roll_back and outcome.epoch > 0:
            return "latest epoch (without roll-back the latest set is the one in use)"
        if self.config.batch_size is not None:
            return "latest accepted epoch (batch training: scores of different batches are not compared)"
        if accuracy > state.best_accuracy:
            return "highest training accuracy among accepted epochs"
        return None

    def _metrics(self, state: TrainState, outcome: EpochOutcome, summary: dict[str, Any], duration_s: float,
                 usage_before: dict[str, Usage]) -> EpochMetrics:
        usage_after = self.rt.meter.by_role()
        return EpochMetrics(
            epoch=outcome.epoch,
            status=outcome.status,
            accepted=outcome.status in ("baseline", "accepted"),
            train_accuracy=summary["accuracy"],
            train_correct=summary["correct"],
            train_n=summary["n"],
            train_accuracy_strict=summary.get("accuracy_strict"),
            train_errors=summary["errors"],
            incumbent_accuracy=state.incumbent_accuracy,
            function_count=len(outcome.functions),
            actions=[Action.model_validate(a.to_dict()) for a in outcome.actions],
            stale=state.stale,
            best_epoch=state.best_epoch,
            best_accuracy=state.best_accuracy,
            best_reason=state.best_reason or None,
            usage={role: (usage_after[role] - usage_before.get(role, Usage())).to_dict() for role in usage_after},
            duration_s=round(duration_s, 3),
        )

    # -- journal and stopping ---------------------------------------------------------------------------

    def _journal(self, epoch: int) -> dict[str, Any]:
        """What the journal holds for an unfinished epoch: finished rollouts per phase, and the optimizer step.
        Rollouts that failed on the endpoint are left out, so a resume gives them another chance."""
        found: dict[str, Any] = {}
        for event in self.run.events():
            if event.get("epoch") != epoch:
                continue
            if event["event"] == "rollout" and not endpoint_failed(event["record"]):
                found.setdefault(event["phase"], {})[event["record"]["id"]] = event["record"]
            elif event["event"] == "candidate":
                found["step"] = StepResult(
                    FunctionSet.from_json(event["functions"]), [ActionRecord(**a) for a in event["actions"]]
                )
        return found

    def _usage(self) -> dict[str, dict[str, Any]]:
        """What the run has spent so far, per role; journaled with every event so a resume counts it all."""
        return {role: u.to_dict() for role, u in self.rt.meter.by_role().items()}

    def _stop(self, status: str, reason: str) -> str:
        self.run.log("stop", status=status, reason=reason)
        self.run.finish(status, reason=reason, usage=self._usage())
        return status
