"""Optimizer methods by `optimizer.method`, as registered in `agenttrain.registry.optimizers`: the paper's
`progressive` (progressive.py), its `all_at_once` ablation (all_at_once.py) and the `tool_creation` baseline
(tool_creation.py). base.py says what a method is and what the training loop does for it; incumbent.py is the
paper's accept-or-roll-back loop; prompting.py and actions.py are the prompt and the edits every method shares.
A plugin registers its own method through the entry point group `agenttrain.optimizers`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agenttrain.registry import optimizers

if TYPE_CHECKING:
    from agenttrain.config import OptimizerConfig
    from agenttrain.optimizers.base import MethodParts, Optimizer, RunPlan


def make_optimizer(parts: MethodParts) -> Optimizer:
    """The method `parts.config.method` names."""
    optimizer: Optimizer = optimizers.get(parts.config.method)(parts)
    return optimizer


def run_plan(config: OptimizerConfig, worst_case: bool, train: int, val: int) -> RunPlan:
    """What a run of the configured method may spend with `train` training and `val` validation tasks; a plugin
    method without a `plan` is estimated as the paper's loop."""
    from agenttrain.optimizers.incumbent import IncumbentMethod

    method = optimizers.get(config.method)
    plan: RunPlan = getattr(method, "plan", IncumbentMethod.plan)(config, worst_case, train, val)
    return plan
