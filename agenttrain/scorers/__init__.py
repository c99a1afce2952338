"""Answer scorers: `judge` one reply, `judge_async` / `judge_many` with a per-item time limit."""

from agenttrain.scorers.registry import check_scorer, judge
from agenttrain.scorers.runner import JudgePool, judge_async, judge_many
from agenttrain.scorers.verdict import Verdict

__all__ = ["JudgePool", "Verdict", "check_scorer", "judge", "judge_async", "judge_many"]
