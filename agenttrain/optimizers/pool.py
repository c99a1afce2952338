"""The search's pool: every function set run on the validation split, with its result on each validation task.

A set is on the front while no other set is at least as good on every validation task and better on one (the
per-task Pareto front, as in GEPA): a set that alone solves some tasks stays there even when its accuracy is
lower, so what it knows is not lost. Parents are drawn from the front, favouring sets that few others match on
the tasks they solve; merges pair front members that solve different tasks.

Functions are judged as parts, too: a version of a function (its exact code) is scored on every validation task
where the agent called it, in every set of the pool that holds it. A merge keeps, of each name, the version with
the better record, and leaves out a function whose record is worse than the agent did where it called none; the
library is that choice made over the whole pool.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

from agenttrain.functions import Function, FunctionSet
from agenttrain.rundir.attribution import attribute
from agenttrain.rundir.records import FunctionEffect, RolloutRecord

UNIQUE_WEIGHT = 0.1  # a front member that solves nothing alone is still drawn, rarely


def identity(functions: FunctionSet) -> frozenset[str]:
    """What makes two sets the same idea: the same functions, in whatever order."""
    return frozenset(f.content_hash() for f in functions)


def solver_counts(members: Sequence[Member]) -> dict[str, int]:
    """For each validation task some of `members` solve, how many of them do."""
    counts: dict[str, int] = {}
    for member in members:
        for task in member.solved:
            counts[task] = counts.get(task, 0) + 1
    return counts


@dataclass(frozen=True)
class Member:
    epoch: int
    functions: FunctionSet
    val: tuple[RolloutRecord, ...]

    @property
    def solved(self) -> frozenset[str]:
        return frozenset(r.id for r in self.val if r.correct)

    @property
    def accuracy(self) -> float:
        return len(self.solved) / len(self.val) if self.val else 0.0

    def dominates(self, other: Member) -> bool:
        """At least as good on every validation task, and better on one."""
        return self.solved > other.solved

    def effects(self) -> dict[str, FunctionEffect]:
        return {e.name: e for e in attribute(self.functions.names, self.val)}


class Pool:
    def __init__(self) -> None:
        self.members: list[Member] = []

    def add(self, member: Member) -> bool:
        """Whether `member` joined: a set the pool already has (the same functions judged again) does not; its
        first judgement stands for it."""
        if self.same_set(member.functions, member.epoch) is not None:
            return False
        self.members.append(member)
        return True

    def join(self, epoch: int, functions: FunctionSet, val: Sequence[RolloutRecord] | None) -> Member | None:
        """The member a set that ran on the validation split (`val`) became, if it joined."""
        if val is None:
            return None
        member = Member(epoch, functions, tuple(val))
        return member if self.add(member) else None

    def before(self, epoch: int) -> list[Member]:
        return [m for m in self.members if m.epoch < epoch]

    def front(self, epoch: int) -> list[Member]:
        """The members recorded before `epoch` that no other of them dominates."""
        members = self.before(epoch)
        return [m for m in members if not any(other.dominates(m) for other in members)]

    def best(self, epoch: int) -> Member:
        """The member recorded before `epoch` with the highest estimated accuracy; then the most accurate as
        measured, then the earliest."""
        return max(self.before(epoch), key=lambda m: (self.estimate(m, epoch), m.accuracy, -m.epoch))

    def estimate(self, member: Member, epoch: int) -> float:
        """`member`'s validation accuracy with each task's outcome replaced by the record of what decided it,
        over the pool before `epoch`: the function version the agent called, else how the agent does unaided.
        One set's outcome on a task is noisy; the record of a part pools every set that holds it."""
        unaided, total = self.unaided(epoch), 0.0
        for record in member.val:
            called = member.functions.get(record.function_calls[0].name) if record.function_calls else None
            if called is not None:
                right, times = self.record(called, epoch)
                total += right / times
            else:
                total += float(record.correct) if record.function_calls else unaided  # a name it does not have
        return total / len(member.val) if member.val else 0.0

    def on_front(self, member: Member) -> bool:
        """Not dominated by an earlier member."""
        return not any(other.dominates(member) for other in self.before(member.epoch))

    def same_set(self, functions: FunctionSet, epoch: int) -> Member | None:
        """The first member recorded before `epoch` with these functions."""
        key = identity(functions)
        return next((m for m in self.before(epoch) if identity(m.functions) == key), None)

    def sample_parent(self, rng: random.Random, epoch: int) -> Member:
        """A front member, drawn with weight: for each validation task it solves, one over the number of front
        members that solve it too (a set alone on some tasks is drawn most)."""
        front = self.front(epoch)
        solvers = solver_counts(front)
        weights = [UNIQUE_WEIGHT + sum(1 / solvers[t] for t in member.solved) for member in front]
        return rng.choices(front, weights)[0]

    def merge_pair(self, epoch: int, tried: set[frozenset[str]]) -> tuple[Member, Member, FunctionSet] | None:
        """Two front members whose merge is a new set, the pair solving the most tasks between them that the
        other does not, the more accurate first, and their merge; pairs tried before are skipped."""
        pairs = []
        for a, b in combinations(self.front(epoch), 2):
            first, second = (a, b) if (a.accuracy, -a.epoch) >= (b.accuracy, -b.epoch) else (b, a)
            key = frozenset((a.functions.content_hash(), b.functions.content_hash()))
            union = self.merged(first, second, epoch)
            if key in tried or identity(union) in (identity(a.functions), identity(b.functions)):
                continue
            pairs.append((len(a.solved ^ b.solved), -max(a.epoch, b.epoch), first, second, union))
        if not pairs:
            return None
        _, _, first, second, union = max(pairs, key=lambda p: (p[0], p[1]))
        return first, second, union

    def record(self, function: Function, epoch: int) -> tuple[int, int]:
        """(right, called): the validation tasks where the agent called this exact version, in every set recorded
        before `epoch` that holds it, and how many of them ended right."""
        right = called = 0
        for member in self.before(epoch):
            if member.functions.get(function.name) == function:
                effect = member.effects()[function.name]
                right, called = right + effect.right, called + len(effect.tasks)
        return right, called

    def unaided(self, epoch: int) -> float:
        """How often the agent was right on validation tasks where it called no function, over the pool: what a
        function has to beat to be worth its place."""
        right = called = 0
        for member in self.before(epoch):
            alone = [r for r in member.val if not r.function_calls]
            right, called = right + sum(r.correct for r in alone), called + len(alone)
        return right / called if called else 0.0

    def merged(self, a: Member, b: Member, epoch: int) -> FunctionSet:
        """The functions of both sets: of each name, the version with the better record (`a`'s on a tie); a
        function whose record is worse than the agent did unaided is left out."""
        return FunctionSet(self._choose([*a.functions, *b.functions], epoch, keep_untried=True))

    def library(self, epoch: int) -> FunctionSet:
        """Of every function name in the pool, the version with the best record, among those the agent called
        and that did better than it did unaided; by name."""
        versions = [f for m in self.before(epoch) for f in m.functions]
        return FunctionSet(tuple(sorted(self._choose(versions, epoch, keep_untried=False), key=lambda f: f.name)))

    def _choose(self, versions: list[Function], epoch: int, keep_untried: bool) -> tuple[Function, ...]:
        floor = self.unaided(epoch)
        chosen: dict[str, tuple[float, Function]] = {}
        for function in versions:
            right, called = self.record(function, epoch)
            rate = right / called if called else None
            if (rate is None and not keep_untried) or (rate is not None and rate < floor):
                continue
            rate = -1.0 if rate is None else rate
            if function.name not in chosen or chosen[function.name][0] < rate:
                chosen[function.name] = (rate, function)
        return tuple(function for _, function in chosen.values())

