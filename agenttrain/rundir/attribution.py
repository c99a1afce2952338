"""What each learned function did, read from scored rollouts: where the agent called it, how those tasks went, and
which of them flipped against the set it came from. Pure functions of records; the optimizer's prompt, the
epoch metrics, `show`, `diff` and the viewer all read the same numbers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from agenttrain.rundir.records import Comparison, FunctionEffect, RolloutRecord
from agenttrain.stats import compare_outcomes


def attribute(names: Iterable[str], records: Sequence[RolloutRecord],
              parent: Sequence[RolloutRecord] = ()) -> list[FunctionEffect]:
    """One effect per name in `names` (the set's functions), from `records` of that set; `parent` holds the
    records of the set it came from on the same tasks (fixed/broken stay empty where a task has none)."""
    before = {r.id: r.correct for r in parent}
    effects = []
    for name in names:
        calls = [(r, c) for r in records for c in r.function_calls if c.name == name]
        tasks = list(dict.fromkeys(r.id for r, _ in calls))
        outcome = {r.id: r.correct for r, _ in calls}
        effects.append(FunctionEffect(
            name=name, calls=len(calls), failed_calls=sum(not c.ok for _, c in calls), tasks=tasks,
            right=sum(outcome[t] for t in tasks),
            fixed=[t for t in tasks if t in before and outcome[t] and not before[t]],
            broken=[t for t in tasks if t in before and before[t] and not outcome[t]],
        ))
    return effects


def describe(effect: FunctionEffect) -> str:
    """`to_base` was called on 5 tasks (7 calls, 1 failed); 4 ended right; against its parent: 2 fixed, 1 broken."""
    if not effect.calls:
        return f"`{effect.name}` was never called"
    failed = f", {effect.failed_calls} failed" if effect.failed_calls else ""
    text = (f"`{effect.name}` was called on {len(effect.tasks)} tasks ({effect.calls} calls{failed}); "
            f"{effect.right} ended right")
    if effect.fixed or effect.broken:
        text += f"; against its parent: {len(effect.fixed)} fixed, {len(effect.broken)} broken"
    return text


def compare(records: Sequence[RolloutRecord], against: Sequence[RolloutRecord], label: str, split: str
            ) -> Comparison:
    """`records` against `against`, paired by task, with the exact McNemar p-value."""
    paired = compare_outcomes(against, records)
    return Comparison(against=label, split=split, paired=paired.paired, fixed=paired.fixed, broken=paired.broken,
                      p_value=paired.p_value)
