"""The synchronous `judge` that dispatches to a scorer registered by name (`agenttrain.registry.scorers`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from agenttrain.registry import scorers
from agenttrain.scorers.verdict import Verdict

Judge = Callable[[str | None, str, Mapping[str, Any]], Verdict]


def check_scorer(scorer: str) -> None:
    """A UserError naming the registered scorers when `scorer` is not one of them."""
    scorers.get(scorer)


def judge(scorer: str, prediction: str | None, answer: str, fields: Mapping[str, Any] | None = None) -> Verdict:
    """Extract the answer from `prediction` as the scorer's task does, then compare it with `answer`.

    Pure and synchronous, with no time limit: use `judge_async` / `judge_many` on untrusted replies.
    `fields` carries per-example extras (TabMWP: `choices`, `unit`).
    """
    scorer_function: Judge = scorers.get(scorer)
    return scorer_function(prediction, answer, fields or {})
