"""Answer scorers: `judge` one reply, `judge_async` / `judge_many` with a per-item time limit.

The names below load their module on first use, so that importing `agenttrain.scorers.extraction` (tasks and
`data pull` do, and so `agenttrain --help`) does not start up the registry and the scorer processes' runner.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agenttrain.scorers.judging import check_scorer, judge, reads_rollout
    from agenttrain.scorers.runner import JudgePool, judge_async, judge_many, warm_judges
    from agenttrain.scorers.verdict import Verdict

_MODULE_OF = {
    "check_scorer": "judging", "judge": "judging", "reads_rollout": "judging",
    "JudgePool": "runner", "judge_async": "runner", "judge_many": "runner", "warm_judges": "runner",
    "Verdict": "verdict",
}  # fmt: skip
__all__ = [
    "JudgePool", "Verdict", "check_scorer", "judge", "judge_async", "judge_many", "reads_rollout", "warm_judges",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
