"""Regression cases from training: what each learned function returned to the agent on tasks that ended right.

A case is one distinct (function, arguments, result) of an ok call recorded in an epoch's rollouts. Calls that
cannot become a reproducible case are counted in `Skipped` with the reason, never dropped silently: calls from
runs recorded before arguments were kept, results cut at `sandbox.max_output_chars`, and arguments seen with two
different results (a function that depends on chance or the clock).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agenttrain.functions import FunctionSet
from agenttrain.rundir.records import RolloutRecord
from agenttrain.sandbox.worker import TRUNCATED


@dataclass(frozen=True)
class Case:
    function: str
    arguments: dict[str, Any]
    result: str  # the text the agent saw: printed output, then str() of the returned value
    task: str  # the first training task where this call was made

    def to_json(self) -> dict[str, Any]:
        return {"function": self.function, "arguments": self.arguments, "result": self.result, "task": self.task}


@dataclass
class Cases:
    cases: list[Case] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> calls

    def note(self) -> str:
        """One line on what was left out, for the README and the test module's docstring."""
        if not self.skipped:
            return "Every ok call on a task that ended right became a case."
        return "Left out: " + "; ".join(f"{count} {reason}" for reason, count in sorted(self.skipped.items())) + "."


def regression_cases(functions: FunctionSet, records: Sequence[RolloutRecord]) -> Cases:
    """The cases of `functions` in `records`, in the order the calls were made."""
    found = Cases()
    results: dict[tuple[str, str], Case] = {}
    conflicting: set[tuple[str, str]] = set()
    for record in records:
        if not record.correct:
            continue
        for call in record.function_calls:
            if not call.ok or call.name not in functions:
                continue  # a refused or failed call: an error, not a behaviour to keep
            if call.arguments is None or call.result is None:
                found.skipped["calls recorded before arguments and results were kept"] += 1
            elif TRUNCATED in call.result:
                found.skipped["calls whose result was cut at sandbox.max_output_chars"] += 1
            else:
                key = (call.name, json.dumps(call.arguments, sort_keys=True))
                case = results.setdefault(key, Case(call.name, call.arguments, call.result, record.id))
                if case.result != call.result:
                    conflicting.add(key)
    for key, case in results.items():
        if key in conflicting:
            found.skipped["argument sets that returned different results in different calls"] += 1
        else:
            found.cases.append(case)
    return found
