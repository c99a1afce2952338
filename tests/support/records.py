"""Scored rollout records built in memory, for tests of what reads them (prompts, attribution, diffs)."""

from __future__ import annotations

from typing import Any

from agenttrain.rundir.records import FunctionCallRecord, RolloutRecord


def scored(task: str, correct: bool, calls: list[tuple[str, bool]] = (), messages: list[dict[str, Any]] | None = None,
           **fields: Any) -> RolloutRecord:
    """A record of `task`, right or wrong, that called the named functions (each ok or failed)."""
    function_calls = [FunctionCallRecord(name=name, ok=ok, error=None if ok else "TypeError") for name, ok in calls]
    return RolloutRecord(id=task, question=f"question {task}", gold="1", prediction="1" if correct else "0",
                         extracted="1" if correct else "0", correct=correct, stop_reason="answered",
                         messages=messages or [{"role": "user", "content": f"question {task}"}],
                         function_calls=function_calls, **fields)
