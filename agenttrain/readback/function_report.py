"""`agenttrain functions`: per function of an epoch, what it did in training and where it came from.

What it did is the epoch's attribution (rundir/attribution.py): calls, tasks where it was called, how they ended,
and the tasks fixed or broken against the set the epoch was judged against. Older runs have no attribution in
their metrics: it is computed the same way against the kept set before the epoch. Where it came from walks the
kept sets (baseline and accepted epochs, and the epoch itself): the epoch it appeared in and every revision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agenttrain.rundir.attribution import attribute
from agenttrain.rundir.directory import RunDir, Snapshot
from agenttrain.rundir.records import FunctionEffect


@dataclass(frozen=True)
class Revision:
    epoch: int
    hash: str  # the function's content hash in that epoch


@dataclass(frozen=True)
class FunctionReport:
    effect: FunctionEffect
    revisions: list[Revision]  # the first is the epoch the function appeared in

    @property
    def appeared(self) -> int:
        return self.revisions[0].epoch

    def to_json(self) -> dict[str, Any]:
        return {**self.effect.model_dump(mode="json"), "appeared": self.appeared,
                "revisions": [{"epoch": r.epoch, "hash": r.hash} for r in self.revisions]}


def function_reports(run: RunDir, epoch: int) -> list[FunctionReport]:
    snapshots = [run.snapshot(e) for e in run.epochs() if e <= epoch]
    target = snapshots[-1]
    lineage = [s for s in snapshots[:-1] if s.metrics.accepted] + [target]
    effects = {e.name: e for e in target.metrics.attribution} or _effects(target, lineage[:-1])
    return [FunctionReport(effects.get(f.name) or FunctionEffect(name=f.name, calls=0), _revisions(f.name, lineage))
            for f in target.functions]


def _effects(target: Snapshot, kept_before: list[Snapshot]) -> dict[str, FunctionEffect]:
    parent = kept_before[-1].rollouts() if kept_before else []
    return {e.name: e for e in attribute(target.functions.names, target.rollouts(), parent)}


def _revisions(name: str, lineage: list[Snapshot]) -> list[Revision]:
    revisions: list[Revision] = []
    for snapshot in lineage:
        function = snapshot.functions.get(name)
        if function is None:
            revisions.clear()  # removed, then added again: the history that counts starts over
        elif not revisions or revisions[-1].hash != function.content_hash():
            revisions.append(Revision(snapshot.epoch, function.content_hash()))
    return revisions
