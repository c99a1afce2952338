"""The paper's loop (Algorithm 2), shared by `progressive` and `all_at_once`: one incumbent function set; each
epoch a proposer edits it, the edit runs on the training tasks (or a batch of them) and is kept only when
training accuracy strictly rises; otherwise it is rolled back and remembered as rejected. Ties roll back.

Every iteration counts as an epoch (the paper's pseudo-code counts only accepted ones, so its early stop could
never fire with E = C). With `optimizer.batch_size`, each epoch draws a seeded batch and the incumbent runs on
it too, so that accept or roll back compares like with like (`batch_compare: paper` compares with the
incumbent's last score, as the paper did).
"""

from __future__ import annotations

import random

from agenttrain import stats
from agenttrain.config import OptimizerConfig
from agenttrain.functions import FunctionSet
from agenttrain.optimizers.base import (
    ACTION_REPLY_TOKENS,
    BASELINE_BEST,
    EpochOutcome,
    Loop,
    MethodParts,
    Proposer,
    RunPlan,
    baseline,
)
from agenttrain.rundir.attribution import attribute, compare
from agenttrain.rundir.directory import RunDir
from agenttrain.rundir.records import Comparison, RolloutRecord, summarise
from agenttrain.tasks.base import Example
from agenttrain.wording import plural


class IncumbentMethod:
    def __init__(self, parts: MethodParts, proposer: Proposer) -> None:
        self.config = parts.config
        self.seed = parts.seed
        self.proposer = proposer
        self.incumbent = FunctionSet()
        self.incumbent_accuracy = 0.0
        self.incumbent_records: list[RolloutRecord] = []
        self.rejected: list[tuple[FunctionSet, float]] = []

    @staticmethod
    def plan(config: OptimizerConfig, worst_case: bool, train: int, val: int) -> RunPlan:
        """Every epoch runs, each with `max_actions` actions (each asked again on an invalid answer, worst case)."""
        tasks = train if config.batch_size is None else min(config.batch_size, train)
        evaluations = config.epochs + 1
        if config.batch_size is not None and config.batch_compare == "same_batch":
            evaluations += config.epochs  # the incumbent is re-run on each batch
        retries = config.max_action_retries + 1 if worst_case else 1
        return RunPlan(evaluations * tasks, config.epochs * config.max_actions * retries, ACTION_REPLY_TOKENS, tasks,
                       config.epochs)

    def last_epoch(self) -> int:
        return self.config.epochs

    def finished(self) -> str:
        return f"ran {plural(self.config.epochs, 'epoch')}"

    def restore(self, run: RunDir) -> None:
        """The incumbent is the last kept set; `rejected` what was rolled back after it."""
        for epoch in run.epochs():
            snapshot = run.snapshot(epoch)
            metrics = snapshot.metrics
            if metrics.status in ("baseline", "accepted"):
                self._keep(snapshot.functions, metrics.train_accuracy, snapshot.rollouts())
            elif metrics.status == "rolled_back":
                self.rejected.append((snapshot.functions, metrics.train_accuracy))

    def _keep(self, functions: FunctionSet, accuracy: float, records: list[RolloutRecord]) -> None:
        self.incumbent, self.incumbent_accuracy, self.incumbent_records = functions, accuracy, records
        self.rejected = []

    async def run_epochs(self, loop: Loop, epoch: int) -> list[EpochOutcome]:
        return [await self.run_epoch(loop, epoch)]

    async def run_epoch(self, loop: Loop, epoch: int) -> EpochOutcome:
        if epoch == 0:
            outcome = await baseline(loop)
            self._keep(outcome.functions, outcome.incumbent_accuracy, outcome.records)
            return outcome
        batch = self._batch(loop, epoch)
        reference_records = await self._reference(loop, epoch, batch)
        reference = summarise(reference_records).accuracy if self._same_batch else self.incumbent_accuracy
        stats.preload()  # for the comparison of the candidate below
        proposal = await loop.proposal(epoch, "step", lambda: self.proposer.step(
            self.incumbent, reference, reference_records, self.rejected, epoch))
        actions, cuts = proposal.actions, proposal.prompt_cuts
        if proposal.functions == self.incumbent:  # TERMINATE or only rejected actions: nothing new to evaluate
            return EpochOutcome(epoch, self.incumbent, reference_records, "unchanged", self.incumbent_accuracy,
                                actions, prompt_cuts=cuts)
        records = await loop.rollouts(epoch, "candidate", proposal.functions, batch)
        accuracy = summarise(records).accuracy
        comparison = compare(records, reference_records, "the incumbent", "batch" if self._same_batch else "train")
        effects = attribute(proposal.functions.names, records, reference_records)
        improved = accuracy > reference and self._significant(comparison)
        if improved or not self.config.roll_back:
            self._keep(proposal.functions, accuracy, records)
            return EpochOutcome(epoch, proposal.functions, records, "accepted", accuracy, actions, improved,
                                self._best_reason(loop, accuracy), cuts, comparison, effects)
        self.rejected.append((proposal.functions, accuracy))
        return EpochOutcome(epoch, proposal.functions, records, "rolled_back", self.incumbent_accuracy, actions,
                            prompt_cuts=cuts, comparison=comparison, attribution=effects)

    def _significant(self, comparison: Comparison) -> bool:
        """`accept: significant` also asks the paired test: more tasks fixed than broken, at p < alpha."""
        if self.config.accept != "significant":
            return True
        return comparison.fixed > comparison.broken and comparison.p_value < self.config.alpha

    def _best_reason(self, loop: Loop, accuracy: float) -> str | None:
        """Why an accepted epoch becomes the best one, or None. Batch accuracies are not comparable across
        batches, so with batch training the latest accepted set is the best: it won against its predecessor."""
        if not self.config.roll_back:
            return "latest epoch (without roll-back the latest set is the one in use)"
        if self.config.batch_size is not None:
            return "latest accepted epoch (batch training: scores of different batches are not compared)"
        return BASELINE_BEST if accuracy > loop.best_accuracy else None

    @property
    def _same_batch(self) -> bool:
        return self.config.batch_size is not None and self.config.batch_compare == "same_batch"

    def _batch(self, loop: Loop, epoch: int) -> list[Example]:
        """The whole training split, or a seeded sample of it per epoch (batch training)."""
        train = loop.splits.train
        if self.config.batch_size is None or self.config.batch_size >= len(train):
            return list(train)
        return random.Random(f"{self.seed}-{epoch}").sample(train, self.config.batch_size)

    async def _reference(self, loop: Loop, epoch: int, batch: list[Example]) -> list[RolloutRecord]:
        """The incumbent's records that the optimizer reads and the candidate is compared with."""
        if not self._same_batch:
            return self.incumbent_records
        return await loop.rollouts(epoch, "incumbent", self.incumbent, batch)
