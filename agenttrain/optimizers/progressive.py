"""`progressive`, the paper's AgentOptimizer (Algorithm 1): the LLM edits the function set one action at a time
(add, revise or remove a function, or TERMINATE), up to `max_actions` per epoch, each call seeing the list as the
previous actions left it; an invalid action is sent back with the reason, up to `max_action_retries` times."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from agenttrain.agents.base import call_arguments
from agenttrain.endpoint.client import ContextOverflow, RequestRefused
from agenttrain.functions import FunctionSet
from agenttrain.optimizers.actions import EDIT_TOOLS, STOPS_THE_RUN, apply_action, check_packages, rejection
from agenttrain.optimizers.base import MethodParts, Proposal
from agenttrain.optimizers.incumbent import IncumbentMethod
from agenttrain.optimizers.prompting import (
    EXAMPLE_FUNCTION,
    PromptBuilder,
    PromptWindow,
    build_prompt,
    sample_index,
)
from agenttrain.registry import optimizers
from agenttrain.rundir.records import Action, RolloutRecord

SYSTEM_PROMPT = """You maintain the list of Python functions that an AI assistant can call while it solves tasks. \
You are shown how the assistant did on training tasks with the current functions; improve the list with \
ONE action per reply: add_function, revise_function or remove_function. Reply with the text TERMINATE only \
when you are sure the list cannot be improved.

Rules:
1. Read the conversations. Where a function call failed (wrong arguments, an exception, a NameError, a wrong \
result), revise that function; the name that is called and the name that is defined must agree.
2. Keep functions that work. Remove a function only if future tasks will not need it.
3. A new function must be general and reusable across tasks of this kind: take every value it needs as an \
argument; never hard-code numbers or names from one task.
4. `code` is the complete Python function, starting with `def <name>(`, with its imports inside or above it; \
its parameters are exactly the names in `arguments`. `packages` lists the pip packages it imports \
(empty string if none). `arguments` is a JSON object mapping each parameter to its JSON schema.
5. Do not give up early: TERMINATE only when every failure is out of reach of a function.

""" + EXAMPLE_FUNCTION
CLOSING = "Take one action on List B now, or reply TERMINATE."


def _outcome_text(error: str | None) -> str:
    if error is None:
        return "Applied."
    if not error:
        return "Not applied: the step's action limit was reached."
    return f"Rejected: {error}. Fix it and call the tool again."


class ProgressiveProposer:
    """One step: up to `max_actions` calls; each reply's tool calls are applied in order, each one an action.
    `notes` (optional) adds to each prompt what the caller knows of the functions (the search's attribution);
    `lane` keeps concurrent proposals of one epoch from sharing cached replies."""

    def __init__(self, parts: MethodParts, lane: int = 0) -> None:
        self.config = parts.config
        self.sandbox = parts.sandbox
        self.window = PromptWindow(parts.client, parts.config)
        self.lane = lane

    async def step(self, best: FunctionSet, best_accuracy: float, records: Sequence[RolloutRecord],
                   rejected: Sequence[tuple[FunctionSet, float]], epoch: int, notes: str = "") -> Proposal:
        result = Proposal(functions=best)
        while len(result.actions) < self.config.max_actions:
            prompt = partial(build_prompt, best, best_accuracy, result.functions, rejected, records,
                             closing=CLOSING, notes=notes)
            if not await self._one_call(prompt, result, epoch):
                break
        return result

    async def _one_call(self, prompt: PromptBuilder, result: Proposal, epoch: int) -> bool:
        """One optimizer request (with retries for invalid actions). False once the model says TERMINATE, or
        when even a shortened request does not fit the model's context."""
        messages: list[dict[str, Any]] = []  # the retry conversation after the prompt
        for attempt in range(1, self.config.max_action_retries + 2):
            index = sample_index(epoch, len(result.actions), attempt, self.lane)
            try:
                message, cuts = await self.window.ask(SYSTEM_PROMPT, prompt, EDIT_TOOLS, index, messages)
            except (ContextOverflow, RequestRefused) as exc:
                result.actions.append(Action(action="terminate", status="rejected", error=str(exc), attempts=attempt))
                return False
            result.prompt_cuts = cuts
            calls = message.get("tool_calls") or []
            reason = (message.get("content") or "").strip() or None
            if not calls:
                if "TERMINATE" in (reason or "").upper() or attempt > self.config.max_action_retries:
                    result.actions.append(Action(action="terminate", status="terminate", reason=reason))
                    return False
                messages += [message, {"role": "user", "content": "Reply with one tool call, or TERMINATE."}]
                continue
            outcomes = await self._apply_calls(calls, result, reason, attempt)
            if all(error is None for error in outcomes.values()):
                return True
            messages += [message] + [
                {"role": "tool", "tool_call_id": call["id"], "content": _outcome_text(outcomes.get(call["id"], ""))}
                for call in calls
            ]
        return True

    async def _apply_calls(
        self, calls: list[dict[str, Any]], result: Proposal, reason: str | None, attempt: int
    ) -> dict[str, str | None]:
        """Apply each call in order (each counts as an action); map call id -> None if applied, else the error."""
        outcomes: dict[str, str | None] = {}
        for call in calls:
            if len(result.actions) >= self.config.max_actions:
                break
            tool = call["function"]["name"]
            try:
                arguments = call_arguments(call)
                edited, name = apply_action(result.functions, tool, arguments)
                if (function := edited.get(name)) is not None:
                    await check_packages(self.sandbox, function)
            except STOPS_THE_RUN:
                raise
            except Exception as exc:
                outcomes[call["id"]] = problem = rejection(exc)
                if attempt > self.config.max_action_retries:
                    result.actions.append(Action(action=tool, status="rejected", error=problem, attempts=attempt,
                                                 reason=reason))
                continue
            outcomes[call["id"]] = None
            result.functions = edited
            result.actions.append(Action(action=tool, name=name, attempts=attempt, reason=reason))
        return outcomes


@optimizers.register("progressive")
class Progressive(IncumbentMethod):
    """The paper's method: one action at a time, kept only when training accuracy rises."""

    def __init__(self, parts: MethodParts) -> None:
        super().__init__(parts, ProgressiveProposer(parts))
