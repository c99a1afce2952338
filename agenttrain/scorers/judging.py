"""The synchronous `judge` that dispatches to a scorer registered by name (`agenttrain.registry.scorers`).

A scorer is a function `(prediction, answer, fields) -> Verdict` of the text the answer is read from. A scorer
marked `@reads_rollout` is called `(rollout, answer, fields)` instead: it sees the whole `Rollout` (the
conversation, the function calls, the stop reason), as inspect_ai's `Scorer(state, target)` does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from agenttrain.registry import scorers
from agenttrain.scorers.verdict import Verdict

if TYPE_CHECKING:
    from agenttrain.rundir.records import Rollout

Judge = Callable[[str | None, str, Mapping[str, Any]], Verdict]
RolloutJudge = Callable[["Rollout", str, Mapping[str, Any]], Verdict]
F = TypeVar("F")
ROLLOUT_FIELD = "rollout"  # where a job carries the rollout, for a scorer that reads it


def reads_rollout(scorer: F) -> F:
    """Mark a scorer as taking `(rollout, answer, fields)`."""
    scorer.reads_rollout = True  # type: ignore[attr-defined]
    return scorer


def wants_rollout(scorer: str) -> bool:
    return bool(getattr(scorers.get(scorer), "reads_rollout", False))


def check_scorer(scorer: str) -> None:
    """A UserError naming the registered scorers when `scorer` is not one of them."""
    scorers.get(scorer)


def judge(scorer: str, prediction: str | None, answer: str, fields: Mapping[str, Any] | None = None) -> Verdict:
    """Extract the answer from `prediction` as the scorer's task does, then compare it with `answer`.

    Pure and synchronous, with no time limit: use `judge_async` / `judge_many` on untrusted replies.
    `fields` carries per-example extras (TabMWP: `choices`, `unit`) and, for a scorer that reads the whole
    rollout, the rollout under `rollout` (one with only this prediction when there is none, as when scoring a
    predictions file).
    """
    extras = dict(fields or {})
    function = scorers.get(scorer)
    if not getattr(function, "reads_rollout", False):
        extras.pop(ROLLOUT_FIELD, None)
        plain: Judge = function
        return plain(prediction, answer, extras)
    from agenttrain.rundir.records import Rollout  # here: scorer processes that never need it skip pydantic

    data = extras.pop(ROLLOUT_FIELD, None) or {"id": "", "prediction": prediction, "stop_reason": "answered"}
    whole: RolloutJudge = function
    return whole(Rollout.model_validate(data), answer, extras)
