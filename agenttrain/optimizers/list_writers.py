"""Optimizers that write the whole function list in one reply, for the paper's comparisons.

- `AllAtOnceOptimizer` (`optimizer.mode: all_at_once`, the paper's ablation): each epoch one call returns the
  complete new list, which replaces the old one; the trainer's roll-back and early-stop apply as usual.
- `ToolCreator` (`optimizer.method: tool_creation`, a CRAFT/CREATOR-like baseline): one call sees the training
  tasks and the baseline conversations and writes reusable functions, each naming the tasks it was written
  for; `breaking_functions` then says which ones to drop. There is no iterative loop.

Both validate every function as AgentOptimizer validates an action (it must load, its packages must exist).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from agenttrain.agents.base import call_arguments
from agenttrain.functions import Function, FunctionSet, InvalidFunction, build_function
from agenttrain.optimizers.progressive import (
    CHARS_PER_TOKEN,
    EXAMPLE_FUNCTION,
    FUNCTION_FIELDS,
    SYSTEM_PROMPT,
    ActionRecord,
    AgentOptimizer,
    StepResult,
    TrainingRecord,
    build_prompt,
    render_histories,
    sample_index,
)

TASKS_FIELD = "The ids of the training tasks this function was written for, e.g. [\"p3\", \"p7\"]."


def _list_tool(name: str, description: str, with_tasks: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {f: {"type": "string", "description": text} for f, text in FUNCTION_FIELDS.items()}
    if with_tasks:
        properties["tasks"] = {"type": "array", "items": {"type": "string"}, "description": TASKS_FIELD}
    item = {"type": "object", "properties": properties, "required": list(properties)}
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": {"functions": {"type": "array", "items": item}},
                           "required": ["functions"]},
        },
    }


REPLACE_TOOL = _list_tool("replace_functions", "Replace the whole function list with this one.", with_tasks=False)
CREATE_TOOL = _list_tool("create_functions", "Create these functions for the assistant.", with_tasks=True)

ALL_AT_ONCE_SYSTEM = SYSTEM_PROMPT.replace(
    "with ONE action per reply: add_function, revise_function or remove_function.",
    "by calling replace_functions once with the complete new list (functions you keep, revised ones and new ones; "
    "a function you leave out is removed).",
)
ALL_AT_ONCE_CLOSING = "Call replace_functions with the complete new list now, or reply TERMINATE to keep List A."

CREATOR_SYSTEM = """You write reusable Python functions (tools) for an AI assistant that solves tasks of one kind. \
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
CREATOR_CLOSING = "Call create_functions now."


def _build(item: Any) -> Function:
    if not isinstance(item, dict):
        raise InvalidFunction("each entry of `functions` must be an object with the fields "
                              f"{list(FUNCTION_FIELDS)}")
    missing = [f for f in FUNCTION_FIELDS if f not in item]
    if missing:
        raise InvalidFunction(f"missing the fields {missing}")
    return build_function(**{f: item[f] for f in FUNCTION_FIELDS})


def _entries(arguments: dict[str, Any]) -> list[Any]:
    entries = arguments.get("functions")
    if not isinstance(entries, list):
        raise InvalidFunction("`functions` must be a list of function objects")
    return entries


def _label(position: int, item: Any) -> str:
    name = item.get("name") if isinstance(item, dict) else None
    return f"function {position + 1}" + (f" ({name!r})" if name else "")


def list_changes(old: FunctionSet, new: FunctionSet, attempts: int, reason: str | None) -> list[ActionRecord]:
    """A replaced list as the add/revise/remove actions it amounts to, so lineage and diff read it as usual."""
    changes = [ActionRecord("remove_function", name, attempts=attempts, reason=reason)
               for name in old.names if name not in new]
    for function in new:
        before = old.get(function.name)
        if before is None:
            changes.append(ActionRecord("add_function", function.name, attempts=attempts, reason=reason))
        elif before != function:
            changes.append(ActionRecord("revise_function", function.name, attempts=attempts, reason=reason))
    return changes


Accept = Callable[[dict[str, Any], int, str | None], Awaitable[StepResult]]


class _ListWriter(AgentOptimizer):
    """One request for a whole list, asked again (up to `max_action_retries` times) when the reply is unusable."""

    async def _ask(
        self, system: str, prompt: str, tool: dict[str, Any], epoch: int, keep: FunctionSet, accept: Accept
    ) -> StepResult:
        """`accept(arguments, attempt, reason)` turns the tool call into a step or raises InvalidFunction saying
        what to fix. After TERMINATE, or when every attempt failed, the step keeps `keep` and records why."""
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
        tool_name = tool["function"]["name"]
        attempts = self.config.max_action_retries + 1
        for attempt in range(1, attempts + 1):
            reply = await self.client.chat(messages, model=self.config.model, params=self.config, tools=[tool],
                                           sample_index=sample_index(epoch, 0, attempt))
            calls = reply.message.get("tool_calls") or []
            reason = (reply.message.get("content") or "").strip() or None
            if not calls:
                if "TERMINATE" in (reason or "").upper():
                    return StepResult(keep, [ActionRecord("terminate", status="terminate", reason=reason)])
                error = f"no {tool_name} call in the reply"
                messages += [reply.message, {"role": "user", "content": f"Reply with one {tool_name} call."}]
                continue
            try:
                if calls[0]["function"]["name"] != tool_name:
                    raise InvalidFunction(f"unknown tool {calls[0]['function']['name']!r}; call {tool_name}")
                return await accept(call_arguments(calls[0]), attempt, reason)
            except (InvalidFunction, ValueError) as exc:
                error = str(exc)
            messages += [reply.message] + [
                {"role": "tool", "tool_call_id": call["id"],
                 "content": f"Rejected: {error}. Fix it and call {tool_name} again." if i == 0 else "Ignored."}
                for i, call in enumerate(calls)
            ]
        return StepResult(keep, [ActionRecord(tool_name, None, "rejected", error, attempts, reason)])

    async def _added(self, functions: FunctionSet, item: Any) -> FunctionSet:
        """`functions` plus the entry, if it loads, its packages exist and its name is new to the list."""
        function = _build(item)
        if function.name in functions:
            raise InvalidFunction(f"{function.name!r} is listed twice; give each function once")
        await self._check_packages(FunctionSet((function,)), function.name)
        return functions.add(function)


class AllAtOnceOptimizer(_ListWriter):
    async def step(
        self,
        best: FunctionSet,
        best_accuracy: float,
        records: Sequence[TrainingRecord],
        rejected: Sequence[tuple[FunctionSet, float]],
        epoch: int,
    ) -> StepResult:
        prompt = build_prompt(best, best_accuracy, best, rejected, records, self.config.max_prompt_tokens,
                              closing=ALL_AT_ONCE_CLOSING)

        async def accept(arguments: dict[str, Any], attempt: int, reason: str | None) -> StepResult:
            new, problems = FunctionSet(), []
            for position, item in enumerate(_entries(arguments)):
                try:
                    new = await self._added(new, item)
                except InvalidFunction as exc:
                    problems.append(f"{_label(position, item)}: {exc}")
            if problems:  # the list is one action: it is applied whole or not at all
                raise InvalidFunction("; ".join(problems))
            return StepResult(new, list_changes(best, new, attempt, reason))

        return await self._ask(ALL_AT_ONCE_SYSTEM, prompt, REPLACE_TOOL, epoch, best, accept)


def creation_prompt(records: Sequence[TrainingRecord], max_prompt_tokens: int) -> str:
    table = "\n".join(f"{r.example_id}: {int(r.correct)}" for r in records)
    fixed = (f"## Result per training task without functions (1 solved, 0 failed)\n{table}\n\n"
             "## The assistant's conversations on the training tasks\n")
    budget = max_prompt_tokens * CHARS_PER_TOKEN - len(CREATOR_SYSTEM) - len(fixed) - len(CREATOR_CLOSING) - 2
    return f"{fixed}{render_histories(records, max(budget, 0))}\n\n{CREATOR_CLOSING}"


class ToolCreator(_ListWriter):
    async def step(
        self,
        best: FunctionSet,
        best_accuracy: float,
        records: Sequence[TrainingRecord],
        rejected: Sequence[tuple[FunctionSet, float]],
        epoch: int,
    ) -> StepResult:
        """The created functions that load; the others are recorded as rejected actions with the reason."""
        task_ids = [r.example_id for r in records]

        async def accept(arguments: dict[str, Any], attempt: int, reason: str | None) -> StepResult:
            result = StepResult(best)
            for position, item in enumerate(_entries(arguments)):
                tasks = written_for(item, task_ids)
                try:
                    result.functions = await self._added(result.functions, item)
                except InvalidFunction as exc:
                    result.actions.append(ActionRecord("add_function", _name(item), "rejected",
                                                       f"{_label(position, item)}: {exc}", attempt, reason, tasks))
                    continue
                result.actions.append(ActionRecord("add_function", result.functions.names[-1], attempts=attempt,
                                                   reason=reason, tasks=tasks))
            return result

        prompt = creation_prompt(records, self.config.max_prompt_tokens)
        return await self._ask(CREATOR_SYSTEM, prompt, CREATE_TOOL, epoch, best, accept)


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


def breaking_functions(
    actions: Sequence[ActionRecord], baseline: Sequence[dict[str, Any]], with_created: Sequence[dict[str, Any]]
) -> dict[str, str]:
    """Created functions to drop, with why: on a task it was written for, a call to it failed, or the task was
    solved without the created set and fails with it while calling the function."""
    solved_before = {r["id"] for r in baseline if r["correct"]}
    by_task = {r["id"]: r for r in with_created}
    dropped: dict[str, str] = {}
    for action in actions:
        if action.status != "applied" or action.name is None:
            continue
        for task in action.tasks or []:
            record = by_task.get(task, {})
            calls = [c for c in record.get("function_calls", []) if c["name"] == action.name]
            failed = next((c for c in calls if not c.get("ok")), None)
            if failed is not None:
                dropped[action.name] = f"its call on task {task} failed: {failed.get('error')}"
                break
            if calls and task in solved_before and not record["correct"]:
                dropped[action.name] = f"task {task} was solved without it and fails with it"
                break
    return dropped
