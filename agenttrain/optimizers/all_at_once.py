"""`all_at_once`, the paper's ablation: each epoch one call returns the complete new function list, which replaces
the old one as a whole; roll-back and early stop apply as in `progressive` (the same incumbent loop)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from agenttrain.config import OptimizerConfig
from agenttrain.functions import FunctionSet, InvalidFunction
from agenttrain.optimizers.actions import list_changes
from agenttrain.optimizers.base import ACTION_REPLY_TOKENS, MethodParts, Proposal, RunPlan
from agenttrain.optimizers.incumbent import IncumbentMethod
from agenttrain.optimizers.list_writing import ListWriter, entries, label, list_tool
from agenttrain.optimizers.progressive import SYSTEM_PROMPT
from agenttrain.optimizers.prompting import build_prompt
from agenttrain.registry import optimizers
from agenttrain.rundir.records import RolloutRecord

REPLACE_TOOL = list_tool("replace_functions", "Replace the whole function list with this one.")
SYSTEM = SYSTEM_PROMPT.replace(
    "with ONE action per reply: add_function, revise_function or remove_function.",
    "by calling replace_functions once with the complete new list (functions you keep, revised ones and new ones; "
    "a function you leave out is removed).",
)
CLOSING = "Call replace_functions with the complete new list now, or reply TERMINATE to keep List A."


class AllAtOnceProposer(ListWriter):
    async def step(self, best: FunctionSet, best_accuracy: float, records: Sequence[RolloutRecord],
                   rejected: Sequence[tuple[FunctionSet, float]], epoch: int) -> Proposal:
        prompt = partial(build_prompt, best, best_accuracy, best, rejected, records, closing=CLOSING)

        async def accept(arguments: dict[str, Any], attempt: int, reason: str | None) -> Proposal:
            new, problems = FunctionSet(), []
            for position, item in enumerate(entries(arguments)):
                try:
                    new = await self.added(new, item)
                except InvalidFunction as exc:
                    problems.append(f"{label(position, item)}: {exc}")
            if problems:  # the list is one action: it is applied whole or not at all
                raise InvalidFunction("; ".join(problems))
            return Proposal(new, list_changes(best, new, attempt, reason))

        return await self.ask(SYSTEM, prompt, REPLACE_TOOL, epoch, best, accept)


@optimizers.register("all_at_once")
class AllAtOnce(IncumbentMethod):
    """The paper's ablation: one call rewrites the whole list each epoch."""

    def __init__(self, parts: MethodParts) -> None:
        super().__init__(parts, AllAtOnceProposer(parts))

    @staticmethod
    def plan(config: OptimizerConfig, worst_case: bool, train: int, val: int) -> RunPlan:
        """One call per epoch, its reply the whole list (it grows by about half the actions per epoch)."""
        paper = IncumbentMethod.plan(config, worst_case, train, val)
        retries = config.max_action_retries + 1 if worst_case else 1
        whole_list = config.max_actions * config.epochs // 2 + 1
        return RunPlan(paper.rollouts, config.epochs * retries, whole_list * ACTION_REPLY_TOKENS, paper.prompt_tasks,
                       config.epochs)
