"""What an optimizer method is, and what the training loop does for it.

A method (`optimizer.method`) is registered by name like tasks, agents and scorers, and built from `MethodParts`.
The trainer knows no method by name: from the baseline on, it calls `run_epochs` for the next epoch (a method may
run several at once, as the search runs its candidates), records each `EpochOutcome` in order (snapshot, metrics,
best epoch, early-stop count) and stops when `last_epoch` is done or early stop fires. What a method asks of the
loop is `Loop`: rollouts that are journaled, resumed and retried through endpoint outages, and optimizer proposals
that are journaled, so a resumed epoch asks the model nothing twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from agenttrain.config import OptimizerConfig
from agenttrain.endpoint.client import LLMClient
from agenttrain.endpoint.usage import Usage
from agenttrain.functions import FunctionSet
from agenttrain.rundir.directory import RunDir
from agenttrain.rundir.records import (
    Action,
    Candidate,
    Comparison,
    EpochStatus,
    FunctionEffect,
    RolloutRecord,
    summarise,
)
from agenttrain.sandbox import CodeSandbox
from agenttrain.tasks.base import Example, Splits


@dataclass(frozen=True)
class MethodParts:
    """What a method is built from."""

    client: LLMClient  # the optimizer's endpoint
    config: OptimizerConfig
    sandbox: CodeSandbox  # answers whether a function's declared packages can be imported
    seed: int  # `task.seed`: batches and samples are drawn from it


@dataclass
class Proposal:
    """An optimizer's edit: the function set it proposes, the actions that made it, and what its prompt left out."""

    functions: FunctionSet
    actions: list[Action] = field(default_factory=list)
    prompt_cuts: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"functions": self.functions.to_json(), "actions": [a.to_json() for a in self.actions],
                "prompt_cuts": self.prompt_cuts}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Proposal:
        return cls(FunctionSet.from_json(data["functions"]), [Action.model_validate(a) for a in data["actions"]],
                   list(data.get("prompt_cuts") or []))


@dataclass
class EpochOutcome:
    """One epoch's result, before the loop records it."""

    epoch: int
    functions: FunctionSet  # the set this epoch evaluated: its snapshot
    records: list[RolloutRecord]  # that set's training rollouts
    status: EpochStatus
    incumbent_accuracy: float  # training accuracy of the set in use after this epoch
    actions: list[Action] = field(default_factory=list)
    improved: bool = False  # False counts towards early stop (the baseline never does)
    best_reason: str | None = None  # why this epoch becomes the run's best, if it does
    prompt_cuts: list[str] = field(default_factory=list)
    comparison: Comparison | None = None  # against the set it was judged against
    attribution: list[FunctionEffect] = field(default_factory=list)
    val_records: list[RolloutRecord] | None = None  # the set's validation rollouts, for a method that selects by them
    candidate: Candidate | None = None  # search: how the set came about
    usage: dict[str, Usage] | None = None  # what the epoch spent, when the method counted it apart (concurrent epochs)


@dataclass(frozen=True)
class Spent:
    """What the run has spent so far, for `optimizer.budget`."""

    rollouts: int
    tokens: int
    usd: float


class Proposer(Protocol):
    """One optimizer step, as the paper's methods define it: from the best list, its score, the training
    rollouts it read and the lists rolled back since, propose an edited list."""

    async def step(self, best: FunctionSet, best_accuracy: float, records: Sequence[RolloutRecord],
                   rejected: Sequence[tuple[FunctionSet, float]], epoch: int) -> Proposal: ...


class Loop(Protocol):
    """What the training loop does for a method."""

    @property
    def splits(self) -> Splits: ...

    @property
    def best_accuracy(self) -> float:
        """The score of the run's best epoch so far (-1 before the baseline): validation accuracy where the
        epoch has validation rollouts, else training accuracy."""
        ...

    def spent(self) -> Spent: ...

    async def rollouts(self, epoch: int, phase: str, functions: FunctionSet, examples: Sequence[Example]
                       ) -> list[RolloutRecord]:
        """Scored rollouts of `functions` on `examples`, in their order. `phase` names this evaluation within the
        epoch (the journal keeps each phase's finished rollouts for a resume)."""
        ...

    async def proposal(self, epoch: int, key: str, propose: Callable[[], Awaitable[Proposal]]) -> Proposal:
        """`propose()`, tried again through endpoint outages and journaled under `key`: a resumed epoch gets the
        journaled proposal back instead of asking again."""
        ...


@dataclass(frozen=True)
class RunPlan:
    """What a method spends in a run, typically or at most, for `--dry-run` (an estimate, stated as one)."""

    rollouts: int  # agent conversations, every phase
    optimizer_requests: int
    reply_tokens: int  # completion tokens per optimizer request
    prompt_tasks: int  # conversations one optimizer prompt shows (before it is cut to fit)
    candidates: int = 0  # sets the optimizer proposes


ACTION_REPLY_TOKENS = 600  # one add/revise action with its code, for estimates


class Optimizer(Protocol):
    """An optimizer method: what the trainer runs every epoch. The class registered under a method's name
    builds it from `MethodParts`; its static `plan(config, worst_case, train, val)` says what a run of it may
    spend with `train` training and `val` validation tasks."""

    def last_epoch(self) -> int:
        """The last epoch the method runs (the paper's methods: `optimizer.epochs`)."""
        ...

    def restore(self, run: RunDir) -> None:
        """Take up the state the run's saved epochs left (a resumed or extended run)."""
        ...

    async def run_epochs(self, loop: Loop, epoch: int) -> list[EpochOutcome]:
        """Run epoch `epoch`, or several from it on (never past `last_epoch`); the loop records them in order.
        On resume `epoch` may fall inside a group the method runs together: it must continue that group as it
        would have run it without the interruption."""
        ...

    def finished(self) -> str:
        """Why the run ended when its epochs ran out, for run.json."""
        ...


async def baseline(loop: Loop) -> EpochOutcome:
    """Epoch 0 of every method: the agent with no learned functions on the training tasks; always kept."""
    functions = FunctionSet()
    records = await loop.rollouts(0, "candidate", functions, loop.splits.train)
    return EpochOutcome(0, functions, records, "baseline", summarise(records).accuracy, best_reason=BASELINE_BEST)


BASELINE_BEST = "highest training accuracy among accepted epochs"
