"""The epoch loop (paper, Algorithm 2): evaluate, let the optimizer edit, accept or roll back, early-stop.

Every iteration counts as an epoch (the paper's pseudo-code counts only accepted ones, so its early-stop
could never fire with E = C). Acceptance needs a strict improvement of training accuracy; ties roll back.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from agenttrain.evaluation import evaluate, summarise
from agenttrain.functions import FunctionSet
from agenttrain.llm import EndpointDown, LLMError
from agenttrain.optimizer import ActionRecord, AgentOptimizer, StepResult, TrainingRecord
from agenttrain.runs import RunDir
from agenttrain.runtime import Runtime
from agenttrain.tasks.base import Example
from agenttrain.usage import BudgetExhausted, Usage


class Reporter(Protocol):
    """Progress display; the CLI draws it, tests pass None."""

    def epoch_started(self, epoch: int, phase: str, tasks: int) -> None: ...
    def rollout_done(self, record: dict[str, Any], usage: Usage) -> None: ...
    def epoch_done(self, metrics: dict[str, Any]) -> None: ...


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
    next_epoch: int = 0


def training_records(records: Sequence[dict[str, Any]]) -> list[TrainingRecord]:
    return [TrainingRecord(r["id"], bool(r["correct"]), r["messages"]) for r in records]


def state_from_run(run: RunDir) -> TrainState:
    """Replay the saved epochs' metrics: the incumbent is the last accepted set, `rejected` what came after it."""
    state = TrainState()
    for epoch in run.epochs():
        snapshot = run.snapshot(epoch)
        metrics = snapshot.metrics
        if metrics["status"] in ("baseline", "accepted"):
            state.incumbent, state.incumbent_accuracy = snapshot.functions, metrics["train_accuracy"]
            state.incumbent_records, state.rejected = snapshot.rollouts(), []
        elif metrics["status"] == "rolled_back":
            state.rejected.append((snapshot.functions, metrics["train_accuracy"]))
        state.stale, state.best_epoch = metrics["stale"], metrics["best_epoch"]
        state.best_accuracy = metrics["best_accuracy"]
        state.next_epoch = epoch + 1
    return state


class Trainer:
    def __init__(self, runtime: Runtime, run: RunDir, reporter: Reporter | None = None) -> None:
        self.rt = runtime
        self.run = run
        self.reporter = reporter
        self.config = runtime.experiment.optimizer
        self.splits = runtime.task.splits()
        self.optimizer = AgentOptimizer(runtime.optimizer_client, self.config, runtime.sandbox)

    async def fit(self, state: TrainState | None = None) -> str:
        """Train until the epochs run out or early-stop fires; returns the run's final status."""
        state = state or TrainState()
        try:
            if state.next_epoch == 0:
                await self._baseline(state, self._journal(0))
            while state.next_epoch <= self.config.epochs:
                if state.stale >= self.config.early_stop:
                    return self._stop("early_stopped", f"{state.stale} epochs in a row without improvement")
                await self._epoch(state, self._journal(state.next_epoch))
        except BudgetExhausted as exc:
            return self._stop("budget_exhausted", str(exc))
        except (EndpointDown, LLMError) as exc:  # an optimizer request that failed for good ends the run too
            return self._stop("failed", f"{exc}; fix the cause, then continue with --resume")
        return self._stop("finished", f"ran {self.config.epochs} epochs")

    # -- one epoch --------------------------------------------------------------------------------------

    async def _baseline(self, state: TrainState, journal: dict[str, Any]) -> None:
        """Epoch 0: the agent with no learned functions; always accepted."""
        started, before = time.monotonic(), self.rt.meter.by_role()
        records = await self._evaluate(0, "candidate", state.incumbent, self.splits.train, journal)
        summary = summarise(records)
        state.incumbent_accuracy, state.incumbent_records = summary["accuracy"], records
        self._finish_epoch(state, 0, state.incumbent, records, "baseline", [], started, before)

    async def _epoch(self, state: TrainState, journal: dict[str, Any]) -> None:
        epoch, started, before = state.next_epoch, time.monotonic(), self.rt.meter.by_role()
        batch = self._batch(epoch)
        reference_records = await self._reference(state, epoch, batch, journal)
        reference = summarise(reference_records)["accuracy"] if self._same_batch else state.incumbent_accuracy
        step = journal.get("step") or await self._step(state, epoch, reference, reference_records)
        if step.functions == state.incumbent:  # TERMINATE or only rejected actions: nothing new to evaluate
            self._finish_epoch(state, epoch, state.incumbent, reference_records, "unchanged", step.actions, started,
                               before)
            return
        records = await self._evaluate(epoch, "candidate", step.functions, batch, journal)
        accuracy = summarise(records)["accuracy"]
        improved = accuracy > reference
        if improved or not self.config.roll_back:
            state.incumbent, state.incumbent_accuracy, state.incumbent_records = step.functions, accuracy, records
            state.rejected = []
            status = "accepted"
        else:
            state.rejected.append((step.functions, accuracy))
            status = "rolled_back"
        self._finish_epoch(state, epoch, step.functions, records, status, step.actions, started, before,
                           improved=improved)

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
        step = await self.optimizer.step(state.incumbent, reference, training_records(records), state.rejected)
        self.run.log("candidate", epoch=epoch, functions=step.functions.to_json(),
                     actions=[a.to_dict() for a in step.actions])
        return step

    async def _evaluate(
        self, epoch: int, phase: str, functions: FunctionSet, examples: list[Example], journal: dict[str, Any]
    ) -> list[dict[str, Any]]:
        if self.reporter:
            self.reporter.epoch_started(epoch, phase, len(examples))

        def on_record(record: dict[str, Any]) -> None:
            self.run.log("rollout", epoch=epoch, phase=phase, record=record)
            if self.reporter:
                self.reporter.rollout_done(record, self.rt.meter.total())

        done = journal.get(phase, {})
        concurrency = self.rt.experiment.llm_for("agent").concurrency
        return await evaluate(self.rt.agent, self.rt.task.scorer, examples, functions, concurrency, on_record, done)

    def _finish_epoch(
        self,
        state: TrainState,
        epoch: int,
        functions: FunctionSet,
        records: list[dict[str, Any]],
        status: str,
        actions: list[Any],
        started: float,
        usage_before: dict[str, Usage],
        improved: bool = False,
    ) -> None:
        summary = summarise(records)
        if status == "baseline" or improved:
            state.stale = 0
        else:
            state.stale += 1
        if status in ("baseline", "accepted") and summary["accuracy"] > state.best_accuracy:
            state.best_epoch, state.best_accuracy = epoch, summary["accuracy"]
            self.run.set_best(epoch, summary["accuracy"], "highest training accuracy among accepted epochs")
        usage_after = self.rt.meter.by_role()
        metrics = {
            "status": status,
            "accepted": status in ("baseline", "accepted"),
            "train_accuracy": summary["accuracy"],
            **{f"train_{k}": v for k, v in summary.items() if k != "accuracy"},
            "incumbent_accuracy": state.incumbent_accuracy,
            "function_count": len(functions),
            "actions": [a.to_dict() for a in actions],
            "stale": state.stale,
            "best_epoch": state.best_epoch,
            "best_accuracy": state.best_accuracy,
            "usage": {role: (usage_after[role] - usage_before.get(role, Usage())).to_dict() for role in usage_after},
            "duration_s": round(time.monotonic() - started, 3),
        }
        self.run.save_snapshot(epoch, functions, metrics, records)
        self.run.log("epoch", epoch=epoch, status=status, train_accuracy=summary["accuracy"])
        self.run.update_info(usage={role: u.to_dict() for role, u in usage_after.items()}, epochs_done=epoch + 1)
        state.next_epoch = epoch + 1
        if self.reporter:
            self.reporter.epoch_done({"epoch": epoch, **metrics})

    # -- journal and stopping ---------------------------------------------------------------------------

    def _journal(self, epoch: int) -> dict[str, Any]:
        """What the journal already holds for an unfinished epoch: finished rollouts per phase, the step."""
        found: dict[str, Any] = {}
        for event in self.run.events():
            if event.get("epoch") != epoch:
                continue
            if event["event"] == "rollout":
                found.setdefault(event["phase"], {})[event["record"]["id"]] = event["record"]
            elif event["event"] == "candidate":
                found["step"] = StepResult(
                    FunctionSet.from_json(event["functions"]), [ActionRecord(**a) for a in event["actions"]]
                )
        return found

    def _stop(self, status: str, reason: str) -> str:
        self.run.log("stop", status=status, reason=reason)
        self.run.finish(status, reason=reason, usage={r: u.to_dict() for r, u in self.rt.meter.by_role().items()})
        return status
