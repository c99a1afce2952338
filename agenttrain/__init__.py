"""agenttrain: train an LLM agent's functions with AgentOptimizer. The public API, one function per command.

    import agenttrain
    outcome = agenttrain.train(Path("configs/quickstart.yaml"))
    result = agenttrain.evaluate(outcome.path, split="test")

    # or from Python objects, as in a notebook:
    outcome = agenttrain.train(task=[{"question": "What is 6 times 7?", "answer": "42"}, ...],
                               agent="gpt-4o-mini", optimizer="gpt-4o", scorer=my_check)
    outcome.functions, outcome.metrics, outcome.path

The functions live in `agenttrain.api`; they are imported on first use, so `import agenttrain` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agenttrain.api import (
        cache_clear,
        cache_stats,
        describe_functions,
        diff,
        dry_run,
        dry_run_sweep,
        export,
        export_folder,
        list_runs,
        plugins,
        pull,
        register_scorer,
        report,
        resume,
        score_file,
        serve,
        show,
        sweep,
        train,
    )
    from agenttrain.api import eval_epochs as evaluate_epochs
    from agenttrain.api import eval_run as evaluate
    from agenttrain.api import prepare as validate

# public name -> its name in agenttrain.api
_API = {
    "train": "train", "resume": "resume", "evaluate": "eval_run", "diff": "diff", "report": "report",
    "export": "export", "show": "show", "list_runs": "list_runs", "dry_run": "dry_run", "validate": "prepare",
    "score_file": "score_file", "plugins": "plugins", "cache_stats": "cache_stats", "cache_clear": "cache_clear",
    "pull": "pull", "evaluate_epochs": "eval_epochs", "sweep": "sweep", "dry_run_sweep": "dry_run_sweep",
    "export_folder": "export_folder", "describe_functions": "describe_functions", "serve": "serve",
    "register_scorer": "register_scorer",
}
__all__ = [
    "cache_clear", "cache_stats", "describe_functions", "diff", "dry_run", "dry_run_sweep", "evaluate",
    "evaluate_epochs", "export", "export_folder", "list_runs", "plugins", "pull", "register_scorer", "report",
    "resume", "score_file", "serve", "show", "sweep", "train", "validate",
]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'agenttrain' has no attribute {name!r}")
    from agenttrain import api

    return getattr(api, _API[name])
