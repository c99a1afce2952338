"""What changed between two snapshots: functions added, removed, revised, and tasks whose outcome flipped."""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from typing import Any

from agenttrain.functions import Function
from agenttrain.rundir.attribution import attribute, describe
from agenttrain.rundir.directory import Snapshot
from agenttrain.stats import Scored, compare_outcomes, paired_outcomes


def _unified(old: str, new: str, label: str) -> str:
    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), f"a/{label}", f"b/{label}"
    )
    return "".join(lines)


def function_diff(old: Function, new: Function) -> str:
    """A unified diff of the code and of the schema/description/packages (rendered as JSON)."""
    def meta(f: Function) -> str:
        return json.dumps(
            {"description": f.description, "parameters": f.parameters, "packages": list(f.packages)}, indent=2
        ) + "\n"

    return _unified(old.code, new.code, f"{old.name}.py") + _unified(meta(old), meta(new), f"{old.name}.schema.json")


def outcome_flips(a: Sequence[Scored], b: Sequence[Scored]) -> list[dict[str, Any]]:
    """Tasks scored in both snapshots whose correctness differs, in b's order."""
    return [{"id": task, "before": was, "after": now} for task, was, now in paired_outcomes(a, b) if was != now]


def function_changes(a: Snapshot, b: Snapshot) -> dict[str, Any]:
    """The functions added, removed, revised (with their diff) and unchanged from a's set to b's."""
    old = {f.name: f for f in a.functions}
    new = {f.name: f for f in b.functions}
    revised = [
        {"name": name, "diff": function_diff(old[name], new[name])}
        for name in new
        if name in old and old[name].content_hash() != new[name].content_hash()
    ]
    return {
        "added": [new[name].to_dict() for name in new if name not in old],
        "removed": [name for name in old if name not in new],
        "revised": revised,
        "unchanged": [name for name in new if name in old and name not in {r["name"] for r in revised}],
    }


def paired_changes(before: Sequence[Scored], after: Sequence[Scored]) -> dict[str, Any]:
    """The tasks that flipped between two runs of the same tasks, and the exact McNemar test of the flips."""
    paired = compare_outcomes(before, after)
    return {"flips": outcome_flips(before, after), "fixed": paired.fixed, "broken": paired.broken,
            "mcnemar_p": paired.p_value}


def diff_snapshots(a: Snapshot, b: Snapshot) -> dict[str, Any]:
    """Function changes and flips on the training tasks; for two sets judged on the validation split (a search's
    candidates, whose training rollouts are small minibatches), also the flips there. What b's functions did is
    read where the sets were judged: the validation split when both ran on it."""
    before, after = a.rollouts(), b.rollouts()
    val_before, val_after = a.val_rollouts(), b.val_rollouts()
    judged = (val_before, val_after) if val_before is not None and val_after is not None else None
    effects = attribute(b.functions.names, *(reversed(judged) if judged else (after, before)))
    return {
        "a": {"snapshot": str(a.path), "epoch": a.epoch, "train_accuracy": a.metrics.train_accuracy},
        "b": {"snapshot": str(b.path), "epoch": b.epoch, "train_accuracy": b.metrics.train_accuracy},
        **function_changes(a, b),
        **paired_changes(before, after),
        "validation": paired_changes(*judged) if judged else None,
        "attribution": {"split": "val" if judged else "train",
                        "functions": [e.model_dump(mode="json") for e in effects],
                        "described": [describe(e) for e in effects]},
    }
