"""Scorer names and the synchronous `judge` that dispatches to them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from agenttrain.errors import UserError
from agenttrain.scorers import basic, gaia, math, tabmwp
from agenttrain.scorers.verdict import Verdict

Judge = Callable[[str | None, str, Mapping[str, Any]], Verdict]

_JUDGES: dict[str, Judge] = {
    "math": math.judge,
    "tabmwp": tabmwp.judge,
    "gaia": gaia.judge,
    "numeric": basic.judge_numeric,
    "exact": basic.judge_exact,
}
SCORERS = tuple(_JUDGES)


def check_scorer(scorer: str) -> None:
    if scorer not in _JUDGES:
        raise UserError(f"unknown scorer {scorer!r}; choose one of {', '.join(SCORERS)}")


def judge(scorer: str, prediction: str | None, answer: str, fields: Mapping[str, Any] | None = None) -> Verdict:
    """Extract the answer from `prediction` as the scorer's task does, then compare it with `answer`.

    Pure and synchronous, with no time limit: use `judge_async` / `judge_many` on untrusted replies.
    `fields` carries per-example extras (TabMWP: `choices`, `unit`).
    """
    check_scorer(scorer)
    return _JUDGES[scorer](prediction, answer, fields or {})
