"""`tool_creation`, a CRAFT/CREATOR-like baseline for the paper's comparison: one call sees the training tasks and
the baseline conversations and writes reusable functions, each naming the tasks it was written for. They run on
the training tasks once; a function that fails or breaks a task it was written for is dropped, and the rest are
kept as epoch 1 without comparing with the baseline. There is no iterative loop."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from agenttrain.config import OptimizerConfig
from agenttrain.functions import FunctionSet, InvalidFunction
from agenttrain.optimizers.base import (
    ACTION_REPLY_TOKENS,
    EpochOutcome,
    Loop,
    MethodParts,
    Proposal,
    RunPlan,
    baseline,
)
from agenttrain.optimizers.list_writing import ListWriter, entries, label, list_tool
from agenttrain.optimizers.prompting import EXAMPLE_FUNCTION, Prompt, render_histories, result_table
from agenttrain.registry import optimizers
from agenttrain.rundir.directory import RunDir
from agenttrain.rundir.records import Action, RolloutRecord, summarise

TASKS_FIELD = "The ids of the training tasks this function was written for, e.g. [\"p3\", \"p7\"]."
CREATE_TOOL = list_tool("create_functions", "Create these functions for the assistant.",
                        {"tasks": {"type": "array", "items": {"type": "string"}, "description": TASKS_FIELD}})
SYSTEM = """You write reusable Python functions (tools) for an AI assistant that solves tasks of one kind. \
You are shown training tasks and how the assistant did on them with no tools but its Python interpreter. Call \
create_functions once with the functions that would help it solve tasks like these.

Rules:
1. Each function must be general: take every value it needs as an argument; never hard-code numbers or names \
from one task.
2. `code` is the complete Python function, starting with `def <name>(`, with its imports inside or above it; \
its parameters are exactly the names in `arguments`. `packages` lists the pip packages it imports (empty \
string if none). `arguments` is a JSON object mapping each parameter to its JSON schema.
3. `tasks` lists the ids of the training tasks the function was written for. A function that does not load, \
or that fails or makes one of those tasks fail when the assistant uses it, is dropped.

""" + EXAMPLE_FUNCTION
CLOSING = "Call create_functions now."
CREATED_BEST = "the created set (tool creation keeps it without comparing with the baseline)"


def creation_prompt(records: Sequence[RolloutRecord], char_budget: int) -> Prompt:
    head = (f"## Result per training task without functions (1 solved, 0 failed)\n{result_table(records)}\n\n"
            "## The assistant's conversations on the training tasks\n")
    histories = render_histories(records, max(char_budget - len(head) - len(CLOSING) - 2, 0))
    return Prompt(f"{head}{histories.text}\n\n{CLOSING}", histories.cuts)


def _name(item: Any) -> str | None:
    name = item.get("name") if isinstance(item, dict) else None
    return str(name) if name is not None else None


def written_for(item: Any, task_ids: list[str]) -> list[str]:
    """The known training tasks an entry names; all of them when it names none (it claims to help everywhere)."""
    named = item.get("tasks") if isinstance(item, dict) else None
    if isinstance(named, str):  # a model may send the list as text: '["p1", "p2"]' or 'p1, p2'
        named = re.findall(r"[^\s,\[\]\"']+", named)
    known = [str(t) for t in named if str(t) in task_ids] if isinstance(named, list) else []
    return known or list(task_ids)


class ToolCreator(ListWriter):
    async def create(self, records: Sequence[RolloutRecord], epoch: int) -> Proposal:
        """The created functions that load; the others are recorded as rejected actions with the reason."""
        task_ids = [r.id for r in records]

        async def accept(arguments: dict[str, Any], attempt: int, reason: str | None) -> Proposal:
            result = Proposal(FunctionSet())
            for position, item in enumerate(entries(arguments)):
                tasks = written_for(item, task_ids)
                try:
                    result.functions = await self.added(result.functions, item)
                except InvalidFunction as exc:
                    result.actions.append(Action(action="add_function", name=_name(item), status="rejected",
                                                 error=f"{label(position, item)}: {exc}", attempts=attempt,
                                                 reason=reason, tasks=tasks))
                    continue
                result.actions.append(Action(action="add_function", name=result.functions.names[-1],
                                             attempts=attempt, reason=reason, tasks=tasks))
            return result

        return await self.ask(SYSTEM, lambda budget: creation_prompt(records, budget), CREATE_TOOL, epoch,
                              FunctionSet(), accept)


def breaking_functions(
    actions: Sequence[Action], baseline_records: Sequence[RolloutRecord], with_created: Sequence[RolloutRecord]
) -> dict[str, str]:
    """Created functions to drop, with why: on a task it was written for, a call to it failed, or the task was
    solved without the created set and fails with it while calling the function."""
    solved_before = {r.id for r in baseline_records if r.correct}
    by_task = {r.id: r for r in with_created}
    dropped: dict[str, str] = {}
    for action in actions:
        if action.status != "applied" or action.name is None:
            continue
        for task in action.tasks or []:
            record = by_task.get(task)
            calls = [c for c in record.function_calls if c.name == action.name] if record else []
            failed = next((c for c in calls if not c.ok), None)
            if failed is not None:
                dropped[action.name] = f"its call on task {task} failed: {failed.error}"
                break
            if record and calls and task in solved_before and not record.correct:
                dropped[action.name] = f"task {task} was solved without it and fails with it"
                break
    return dropped


@optimizers.register("tool_creation")
class ToolCreation:
    """A CRAFT/CREATOR-like baseline: write the functions once from the baseline conversations."""

    def __init__(self, parts: MethodParts) -> None:
        self.creator = ToolCreator(parts)
        self.baseline_records: list[RolloutRecord] = []

    @staticmethod
    def plan(config: OptimizerConfig, worst_case: bool, train: int, val: int) -> RunPlan:
        """The baseline, the created set, and the kept set when some were dropped; one call for the list."""
        retries = config.max_action_retries + 1 if worst_case else 1
        return RunPlan((3 if worst_case else 2) * train, retries, config.max_actions * ACTION_REPLY_TOKENS, train, 1)

    def last_epoch(self) -> int:
        return 1  # the baseline, then the created set

    def finished(self) -> str:
        return "created the function set in one pass (tool_creation)"

    def restore(self, run: RunDir) -> None:
        if 0 in run.epochs():
            self.baseline_records = run.snapshot(0).rollouts()

    async def run_epochs(self, loop: Loop, epoch: int) -> list[EpochOutcome]:
        if epoch == 0:
            outcome = await baseline(loop)
            self.baseline_records = outcome.records
            return [outcome]
        return [await self._create(loop, epoch)]

    async def _create(self, loop: Loop, epoch: int) -> EpochOutcome:
        """Write functions from the baseline once, run them on the training tasks, drop those that break a task
        they were written for, and rerun the training tasks with what is left (if anything is left)."""
        before, train = self.baseline_records, list(loop.splits.train)
        unchanged_accuracy = summarise(before).accuracy
        proposal = await loop.proposal(epoch, "step", lambda: self.creator.create(before, epoch))
        if not proposal.functions:
            return EpochOutcome(epoch, FunctionSet(), before, "unchanged", unchanged_accuracy, proposal.actions,
                                prompt_cuts=proposal.prompt_cuts)
        records = await loop.rollouts(epoch, "candidate", proposal.functions, train)
        dropped = breaking_functions(proposal.actions, before, records)
        functions = FunctionSet(tuple(f for f in proposal.functions if f.name not in dropped))
        actions = [replace_action(a, dropped) for a in proposal.actions]
        if dropped and not functions:
            return EpochOutcome(epoch, FunctionSet(), before, "unchanged", unchanged_accuracy, actions,
                                prompt_cuts=proposal.prompt_cuts)
        if dropped:
            records = await loop.rollouts(epoch, "kept", functions, train)
        return EpochOutcome(epoch, functions, records, "accepted", summarise(records).accuracy, actions,
                            improved=True, best_reason=CREATED_BEST, prompt_cuts=proposal.prompt_cuts)


def replace_action(action: Action, dropped: dict[str, str]) -> Action:
    """An applied action whose function was dropped, recorded as rejected with the reason."""
    if action.status == "applied" and action.name in dropped:
        return action.model_copy(update={"status": "rejected", "error": f"dropped: {dropped[action.name]}"})
    return action
