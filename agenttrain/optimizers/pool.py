"""The search's pool: every function set run on the validation split, with its result on each validation task.

A set is on the front while no other set is at least as good on every validation task and better on one (the
per-task Pareto front, as in GEPA): a set that alone solves some tasks stays there even when its accuracy is
lower, so what it knows is not lost. Parents are drawn from the front, favouring sets that few others match on
the tasks they solve; merges pair front members that solve different tasks.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import combinations

from agenttrain.functions import FunctionSet
from agenttrain.rundir.attribution import attribute
from agenttrain.rundir.records import FunctionEffect, RolloutRecord

UNIQUE_WEIGHT = 0.1  # a front member that solves nothing alone is still drawn, rarely


def identity(functions: FunctionSet) -> frozenset[str]:
    """What makes two sets the same idea: the same functions, in whatever order."""
    return frozenset(f.content_hash() for f in functions)


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

    def before(self, epoch: int) -> list[Member]:
        return [m for m in self.members if m.epoch < epoch]

    def front(self, epoch: int) -> list[Member]:
        """The members recorded before `epoch` that no other of them dominates."""
        members = self.before(epoch)
        return [m for m in members if not any(other.dominates(m) for other in members)]

    def best(self, epoch: int) -> Member:
        """The most accurate member recorded before `epoch`; the earliest among equals."""
        return max(self.before(epoch), key=lambda m: (m.accuracy, -m.epoch))

    def is_new_best(self, member: Member) -> bool:
        earlier = self.before(member.epoch)
        return not earlier or member.accuracy > max(m.accuracy for m in earlier)

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
        solvers: dict[str, int] = {}
        for member in front:
            for task in member.solved:
                solvers[task] = solvers.get(task, 0) + 1
        weights = [UNIQUE_WEIGHT + sum(1 / solvers[t] for t in member.solved) for member in front]
        return rng.choices(front, weights)[0]

    def merge_pair(self, epoch: int, tried: set[frozenset[str]]) -> tuple[Member, Member] | None:
        """Two front members whose union is a new set, the pair solving the most tasks between them that the
        other does not; pairs tried before are skipped."""
        pairs = []
        for a, b in combinations(self.front(epoch), 2):
            key = frozenset((a.functions.content_hash(), b.functions.content_hash()))
            union = identity(merged(a, b))
            if key in tried or union in (identity(a.functions), identity(b.functions)):
                continue
            pairs.append((len(a.solved ^ b.solved), -b.epoch, a, b))
        if not pairs:
            return None
        _, _, a, b = max(pairs, key=lambda p: (p[0], p[1]))
        return (a, b) if a.accuracy >= b.accuracy else (b, a)


def merged(a: Member, b: Member) -> FunctionSet:
    """The functions of both sets; where both have one of a name, the version that did better on the validation
    tasks where it was called (right over called; `a`'s on a tie)."""
    effects_a, effects_b = a.effects(), b.effects()
    chosen = {f.name: f for f in a.functions}
    for function in b.functions:
        mine = chosen.get(function.name)
        if mine is None or (mine != function and _record(effects_b, mine.name) > _record(effects_a, mine.name)):
            chosen[function.name] = function
    return FunctionSet(tuple(chosen.values()))


def _record(effects: dict[str, FunctionEffect], name: str) -> float:
    effect = effects.get(name)
    return effect.right / len(effect.tasks) if effect and effect.tasks else -1.0
