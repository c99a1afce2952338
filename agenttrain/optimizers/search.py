"""`search`: a search over function sets that selects on a validation split the optimizer never reads.

Every epoch is one candidate set. Candidates come in rounds of `optimizer.candidates`, run concurrently:

- **mutation**: a parent drawn from the pool's front (pool.py) runs on a seeded minibatch of training tasks; the
  paper's optimizer step reads those conversations (failed first) and what each of the parent's functions did
  there, and edits the parent's list as usual (add, revise, remove, validated and retried);
- **merge** (first of every other round, when two front members solve different tasks): the two lists united,
  a shared name keeping the version that did better where it was called.

A candidate runs on its own minibatch first and goes on to the validation split only if it beats its parent
there (the gate). Every set run on the validation split joins the pool with its result on each task; the run's
best epoch is the most accurate on the validation split. A round's candidates are drawn from the pool as it stood
when the round began, and recorded one by one in epoch order, so a resume mid-round replays the same round.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from agenttrain.config import OptimizerConfig
from agenttrain.endpoint.usage import Usage, lane_usage
from agenttrain.functions import FunctionSet
from agenttrain.gather import run_all
from agenttrain.optimizers.base import (
    ACTION_REPLY_TOKENS,
    EpochOutcome,
    Loop,
    MethodParts,
    Proposal,
    RunPlan,
)
from agenttrain.optimizers.pool import Member, Pool, identity, merged
from agenttrain.optimizers.progressive import ProgressiveProposer
from agenttrain.registry import optimizers
from agenttrain.rundir.attribution import attribute, compare, describe
from agenttrain.rundir.directory import RunDir
from agenttrain.rundir.records import Action, Candidate, EpochStatus, RolloutRecord, summarise
from agenttrain.tasks.base import Example

VAL_BEST = "highest validation accuracy"
REJECTED_SHOWN = 3  # a parent's latest children that lost, shown to the optimizer as rolled-back lists
TYPICAL_PASS_RATE = 0.5  # share of candidates that pass the gate, for estimates


@dataclass
class Lane:
    """One candidate's work before it is recorded."""

    epoch: int
    round_start: int  # the pool as it stood then is what the candidate was drawn from
    operation: str
    parents: list[Member]
    minibatch: list[Example]
    functions: FunctionSet
    parent_records: list[RolloutRecord] = field(default_factory=list)
    records: list[RolloutRecord] = field(default_factory=list)
    val: list[RolloutRecord] | None = None
    proposal: Proposal | None = None
    note: str | None = None
    usage: dict[str, Usage] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.val is not None

    @property
    def rollouts(self) -> int:
        """What the lane ran: its parent and itself on the minibatch (itself only when something changed), and
        the validation split when it passed."""
        ran_candidate = self.records is not self.parent_records
        return len(self.parent_records) + len(self.records) * ran_candidate + len(self.val or [])


@optimizers.register("search")
class Search:
    """A pool of function sets, judged task by task on a validation split; see the module's docstring."""

    # epochs are candidates, at most; the rollout budget below is what ends a search, not early stop
    DEFAULTS: ClassVar[dict[str, int]] = {"epochs": 100, "early_stop": 1000}
    VALIDATION_SHARE = 0.4  # of the training examples, when the config names no validation split
    # with no optimizer.budget, the rollouts of the paper's method over the same data: its 10 epochs and baseline
    BUDGET_PASSES = 11

    def __init__(self, parts: MethodParts) -> None:
        self.config = parts.config
        self.seed = parts.seed
        self.proposer = ProgressiveProposer(parts)
        self.pool = Pool()
        self.losers: dict[int, list[tuple[int, FunctionSet, float]]] = {}  # parent epoch -> (epoch, set, score)
        self.rollouts_at: dict[int, int] = {}  # rollouts each recorded epoch ran
        self.merged_pairs: set[frozenset[str]] = set()

    @staticmethod
    def plan(config: OptimizerConfig, worst_case: bool, train: int, val: int) -> RunPlan:
        """The baseline on both splits; per candidate its parent and itself on a minibatch, and the validation
        split when it passes the gate (every one, worst case)."""
        batch = min(config.minibatch, train)
        passing = 1.0 if worst_case else TYPICAL_PASS_RATE
        per_candidate = 2 * batch + val * passing
        retries = config.max_action_retries + 1 if worst_case else 1
        return RunPlan(int(train + val + config.epochs * per_candidate), config.epochs * config.max_actions * retries,
                       ACTION_REPLY_TOKENS, batch, config.epochs)

    def last_epoch(self) -> int:
        return self.config.epochs

    def finished(self) -> str:
        return f"searched {self.config.epochs} candidates"

    # -- state --------------------------------------------------------------------------------------------

    def restore(self, run: RunDir) -> None:
        """The pool is every recorded set that ran on the validation split; the losers and merges are read from
        the candidates' records."""
        for epoch in run.epochs():
            snapshot = run.snapshot(epoch)
            metrics = snapshot.metrics
            self.rollouts_at[epoch] = metrics.rollouts if metrics.rollouts is not None else metrics.train_n
            self._join(epoch, snapshot.functions, snapshot.val_rollouts())
            self._note(epoch, snapshot.functions, snapshot.metrics.status, snapshot.metrics.candidate,
                       snapshot.rollouts())

    def _join(self, epoch: int, functions: FunctionSet, val: Sequence[RolloutRecord] | None) -> Member | None:
        """A set that ran on the validation split joins the pool, unless the pool has it already."""
        if val is None:
            return None
        member = Member(epoch, functions, tuple(val))
        return member if self.pool.add(member) else None

    def _note(self, epoch: int, functions: FunctionSet, status: str, candidate: Candidate | None,
              records: Sequence[RolloutRecord]) -> None:
        """A merge's pair is not merged again; a rolled-back mutation is shown to the optimizer with its parent."""
        if candidate is None:
            return
        if candidate.operation == "merge":
            parents = [m for m in self.pool.members if m.epoch in candidate.parents]
            self.merged_pairs.add(frozenset(m.functions.content_hash() for m in parents))
        elif status == "rolled_back":
            self.losers.setdefault(candidate.parents[0], []).append((epoch, functions, summarise(records).accuracy))

    # -- a round ------------------------------------------------------------------------------------------

    def round_of(self, epoch: int, val: int) -> tuple[int, range]:
        """The round `epoch` belongs to, and its epochs. A round has `candidates` epochs, fewer when the rollout
        budget left when it begins affords fewer (at a typical candidate's cost), or the epochs run out; so the
        rounds follow from the recorded epochs alone, and a resume finds the round it was in."""
        number, start = 0, 1
        while True:
            spent = sum(n for e, n in self.rollouts_at.items() if e < start)
            size = min(self.config.candidates, self.config.epochs + 1 - start, self._affordable(spent, val))
            if epoch < start + size:
                return number, range(start, start + size)
            number, start = number + 1, start + size

    def _affordable(self, spent: int, val: int) -> int:
        budget = self.config.budget.rollouts
        if budget is None:
            return self.config.candidates
        typical = 2 * self.config.minibatch + val * TYPICAL_PASS_RATE
        return max(1, math.ceil((budget - spent) / typical))

    async def run_epochs(self, loop: Loop, epoch: int) -> list[EpochOutcome]:
        if epoch == 0:
            return [await self._baseline(loop)]
        number, epochs = self.round_of(epoch, len(loop.splits.val))
        lanes = [self._plan_lane(loop, e, epochs.start, merging=number % 2 == 1) for e in epochs if e >= epoch]
        done = await run_all(self._run_lane(loop, lane) for lane in lanes)
        return [self._record(lane) for lane in done]

    async def _baseline(self, loop: Loop) -> EpochOutcome:
        """The agent without functions, on the training tasks and on the validation split."""
        with lane_usage() as usage:
            records = await loop.rollouts(0, "candidate", FunctionSet(), loop.splits.train)
            val = await loop.rollouts(0, "val", FunctionSet(), loop.splits.val)
        self._join(0, FunctionSet(), val)
        self.rollouts_at[0] = len(records) + len(val)
        return EpochOutcome(0, FunctionSet(), records, "baseline", summarise(val).accuracy, best_reason=VAL_BEST,
                            val_records=val, usage=usage)

    def _plan_lane(self, loop: Loop, epoch: int, round_start: int, merging: bool) -> Lane:
        """What the candidate of `epoch` will be: drawn from the pool as it stood when its round began. The first
        candidate of every other round is a merge, when there is a pair to merge."""
        rng = random.Random(f"{self.seed}-search-{epoch}")
        train = loop.splits.train
        merge = merging and epoch == round_start
        pair = self.pool.merge_pair(round_start, self.merged_pairs) if merge else None
        if pair is not None:
            batch = rng.sample(train, min(2 * self.config.minibatch, len(train)))  # room to show what b adds
            return Lane(epoch, round_start, "merge", list(pair), batch, merged(*pair))
        parent = self.pool.sample_parent(rng, round_start)
        batch = rng.sample(train, min(self.config.minibatch, len(train)))
        return Lane(epoch, round_start, "mutation", [parent], batch, parent.functions)

    async def _run_lane(self, loop: Loop, lane: Lane) -> Lane:
        with lane_usage() as lane.usage:
            parent = lane.parents[0]
            lane.parent_records = await loop.rollouts(lane.epoch, "parent", parent.functions, lane.minibatch)
            if lane.operation == "mutation" and not await self._mutate(loop, lane):
                return lane
            lane.records = await loop.rollouts(lane.epoch, "candidate", lane.functions, lane.minibatch)
            if not passes_gate(lane.records, lane.parent_records):
                lane.note = "it did not beat its parent on the minibatch"
                return lane
            lane.val = await loop.rollouts(lane.epoch, "val", lane.functions, loop.splits.val)
        return lane

    async def _mutate(self, loop: Loop, lane: Lane) -> bool:
        """The optimizer's edit of the parent from its minibatch conversations; False when there is nothing to run."""
        parent, records = lane.parents[0], lane.parent_records
        if all(r.correct for r in records):
            lane.note, lane.records = "its parent solved the whole minibatch", records
            return False
        notes = "## What each function of List A did on these tasks\n" + "\n".join(
            describe(e) for e in attribute(parent.functions.names, records)) if parent.functions else ""
        round_start = lane.round_start
        losers = [(functions, score) for epoch, functions, score in self.losers.get(parent.epoch, [])
                  if epoch < round_start][-REJECTED_SHOWN:]
        lane.proposal = await loop.proposal(lane.epoch, "step", lambda: self.proposer.step(
            parent.functions, summarise(records).accuracy, records, losers, lane.epoch, notes))
        lane.functions = lane.proposal.functions
        if identity(lane.functions) == identity(parent.functions):
            lane.note, lane.records = "the optimizer changed nothing", records
            return False
        if (known := self.pool.same_set(lane.functions, round_start)) is not None:
            lane.note = f"it proposed the set of epoch {known.epoch}, already judged"
            lane.functions, lane.records = parent.functions, records
            return False
        return True

    # -- recording ----------------------------------------------------------------------------------------

    def _record(self, lane: Lane) -> EpochOutcome:
        """The candidate as an epoch: accepted when it joins the front, rolled back when it lost at the gate or is
        dominated, unchanged when there was nothing new to run. Decided in epoch order against every set recorded
        before it."""
        parent = lane.parents[0]
        self.rollouts_at[lane.epoch] = lane.rollouts
        member = self._join(lane.epoch, lane.functions, lane.val)
        changed = identity(lane.functions) != identity(parent.functions) and \
            (member is not None or self.pool.same_set(lane.functions, lane.epoch) is None)
        on_front = member is not None and self.pool.on_front(member)
        new_best = member is not None and self.pool.is_new_best(member)
        status: EpochStatus = "accepted" if on_front else "rolled_back" if changed else "unchanged"
        candidate = _candidate(lane, on_front)
        self._note(lane.epoch, lane.functions, status, candidate, lane.records)
        compared_on, before = ("val", list(parent.val)) if lane.val is not None else ("minibatch", lane.parent_records)
        after = lane.val if lane.val is not None else lane.records
        proposal = lane.proposal or Proposal(lane.functions, _merge_actions(lane) if lane.operation == "merge" else [])
        return EpochOutcome(
            lane.epoch, lane.functions, lane.records, status, self.pool.best(lane.epoch + 1).accuracy,
            proposal.actions, improved=new_best, best_reason=VAL_BEST if new_best else None,
            prompt_cuts=proposal.prompt_cuts, comparison=compare(after, before, f"epoch {parent.epoch}", compared_on),
            attribution=attribute(lane.functions.names, after, before), val_records=lane.val,
            candidate=candidate, usage=lane.usage,
        )


def passes_gate(records: Sequence[RolloutRecord], parent: Sequence[RolloutRecord]) -> bool:
    """Whether a candidate beat its parent on their minibatch: it fixed a task the parent failed, and is no worse
    in all. An edit helps a few tasks while noise moves all of them, so the gate asks for evidence of the help
    and lets the validation split, larger and unseen, weigh it."""
    failed = {r.id for r in parent if not r.correct}
    return any(r.correct and r.id in failed for r in records) and _correct(records) >= _correct(parent)


def _correct(records: Sequence[RolloutRecord]) -> int:
    return sum(r.correct for r in records)


def _candidate(lane: Lane, on_front: bool) -> Candidate:
    return Candidate(operation=lane.operation, parents=[p.epoch for p in lane.parents],
                     minibatch=[e.id for e in lane.minibatch], parent_correct=_correct(lane.parent_records),
                     correct=_correct(lane.records), passed_gate=lane.passed, on_front=on_front, note=lane.note)


def _merge_actions(lane: Lane) -> list[Action]:
    """A merge as the actions it amounts to against its first parent, so lineage and diff read it as usual."""
    first = lane.parents[0].functions
    return [Action(action="add_function" if f.name not in first else "revise_function", name=f.name,
                   reason=f"merged from epoch {lane.parents[1].epoch}")
            for f in lane.functions if first.get(f.name) != f]
