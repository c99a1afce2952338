"""An agenttrain plugin: a task that makes its own problems, a scorer that reads the last integer, one that reads
the whole rollout, and an optimizer method that needs no optimizer model.

The task owns its config keys (`count`, `max_factor`) and needs no data file; the scorer is named by the
task, so a config says only `task: {name: products}`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from typing import Any

from agenttrain.config import TaskConfig
from agenttrain.functions import FunctionSet, build_function
from agenttrain.optimizers.base import BASELINE_BEST, EpochOutcome, Loop, MethodParts, Proposal, baseline
from agenttrain.rundir.directory import RunDir
from agenttrain.rundir.records import Action, Rollout, summarise
from agenttrain.scorers import Verdict, reads_rollout
from agenttrain.tasks.base import Example, Splits, split_examples

INTEGER = re.compile(r"-?\d+")


class ProductsConfig(TaskConfig):
    """`task:` keys of the products task, on top of the sizes and seed every task has."""

    needs_path = False  # the problems are generated, not read

    count: int = 12  # problems to generate
    max_factor: int = 12


class ProductsTask:
    config_class = ProductsConfig
    name = "products"
    scorer = "last_integer"
    answer_format = "boxed"

    def __init__(self, config: ProductsConfig) -> None:
        self.config = config

    def examples(self) -> list[Example]:
        rng = random.Random(self.config.seed)
        pairs = [(rng.randint(2, self.config.max_factor), rng.randint(2, self.config.max_factor))
                 for _ in range(self.config.count)]
        return [Example(id=f"product-{i}", question=f"What is {a} times {b}?", answer=str(a * b))
                for i, (a, b) in enumerate(pairs)]

    def splits(self) -> Splits:
        c = self.config
        return split_examples(self.examples(), c.train_size, c.test_size, c.val_size, c.seed)


def last_integer(prediction: str | None, answer: str, fields: Mapping[str, Any]) -> Verdict:
    """Right when the last integer in the reply is the answer; runs in agenttrain's scorer processes."""
    found = INTEGER.findall(prediction or "")
    extracted = found[-1] if found else None
    return Verdict(correct=extracted is not None and int(extracted) == int(answer), extracted=extracted)


@reads_rollout
def called_multiply(rollout: Rollout, answer: str, fields: Mapping[str, Any]) -> Verdict:
    """Right when the answer is right and the agent got it from a successful call of `multiply`."""
    called = any(call.name == "multiply" and call.ok for call in rollout.function_calls)
    return Verdict(correct=called and last_integer(rollout.prediction, answer, fields).correct,
                   extracted=rollout.prediction, note=None if called else "multiply was not called")


MULTIPLY = build_function("multiply", "Multiply two integers.", {"a": {"type": "integer"}, "b": {"type": "integer"}},
                          "", "def multiply(a, b):\n    return a * b\n")


class LibraryMethod:
    """An optimizer method from a library of known functions: epoch 1 offers `multiply` and keeps it when the
    training accuracy rises. No optimizer model is asked; the loop still journals the proposal."""

    def __init__(self, parts: MethodParts) -> None:
        self.best_accuracy = 0.0

    def last_epoch(self) -> int:
        return 1

    def finished(self) -> str:
        return "offered the library's functions"

    def restore(self, run: RunDir) -> None:
        if 0 in run.epochs():
            self.best_accuracy = run.snapshot(0).metrics.train_accuracy

    async def run_epochs(self, loop: Loop, epoch: int) -> list[EpochOutcome]:
        return [await self._epoch(loop, epoch)]

    async def _epoch(self, loop: Loop, epoch: int) -> EpochOutcome:
        if epoch == 0:
            outcome = await baseline(loop)
            self.best_accuracy = outcome.incumbent_accuracy
            return outcome

        async def offer() -> Proposal:
            return Proposal(FunctionSet((MULTIPLY,)), [Action(action="add_function", name="multiply")])

        proposal = await loop.proposal(epoch, "step", offer)
        records = await loop.rollouts(epoch, "candidate", proposal.functions, loop.splits.train)
        accuracy = summarise(records).accuracy
        if accuracy > self.best_accuracy:
            return EpochOutcome(epoch, proposal.functions, records, "accepted", accuracy, proposal.actions,
                                improved=True, best_reason=BASELINE_BEST)
        return EpochOutcome(epoch, proposal.functions, records, "rolled_back", self.best_accuracy, proposal.actions)
