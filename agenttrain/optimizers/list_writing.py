"""Asking for a whole function list in one reply, for `all_at_once` and `tool_creation`: one tool whose argument
is the list, asked again (up to `max_action_retries` times) when the reply is unusable, with the prompt fitted
to the model's window like every optimizer request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from agenttrain.agents.base import call_arguments
from agenttrain.endpoint.client import ContextOverflow, RequestRefused
from agenttrain.functions import FunctionSet, InvalidFunction
from agenttrain.optimizers.actions import STOPS_THE_RUN, check_packages, function_from, rejection
from agenttrain.optimizers.base import MethodParts, Proposal
from agenttrain.optimizers.prompting import FUNCTION_FIELDS, PromptBuilder, PromptWindow, sample_index
from agenttrain.rundir.records import Action

Accept = Callable[[dict[str, Any], int, str | None], Awaitable[Proposal]]


def list_tool(name: str, description: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A tool taking `functions`, a list of objects with the five function fields (and `extra` ones)."""
    properties: dict[str, Any] = {f: {"type": "string", "description": text} for f, text in FUNCTION_FIELDS.items()}
    properties.update(extra or {})
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


def entries(arguments: dict[str, Any]) -> list[Any]:
    found = arguments.get("functions")
    if not isinstance(found, list):
        raise InvalidFunction("`functions` must be a list of function objects")
    return found


def label(position: int, item: Any) -> str:
    name = item.get("name") if isinstance(item, dict) else None
    return f"function {position + 1}" + (f" ({name!r})" if name else "")


class ListWriter:
    def __init__(self, parts: MethodParts) -> None:
        self.config = parts.config
        self.sandbox = parts.sandbox
        self.window = PromptWindow(parts.client, parts.config)

    async def ask(self, system: str, prompt: PromptBuilder, tool: dict[str, Any], epoch: int, keep: FunctionSet,
                  accept: Accept) -> Proposal:
        """`accept(arguments, attempt, reason)` turns the tool call into a proposal or raises InvalidFunction
        saying what to fix. After TERMINATE, when every attempt failed, or when the prompt cannot fit the model's
        context, the proposal keeps `keep` and records why."""
        messages: list[dict[str, Any]] = []
        tool_name = tool["function"]["name"]
        attempts = self.config.max_action_retries + 1
        error, reason, cuts = "", None, list[str]()
        for attempt in range(1, attempts + 1):
            try:
                message, cuts = await self.window.ask(system, prompt, [tool], sample_index(epoch, 0, attempt), messages)
            except (ContextOverflow, RequestRefused) as exc:
                return Proposal(keep, [Action(action=tool_name, status="rejected", error=str(exc), attempts=attempt)])
            calls = message.get("tool_calls") or []
            reason = (message.get("content") or "").strip() or None
            if not calls:
                if "TERMINATE" in (reason or "").upper():
                    return Proposal(keep, [Action(action="terminate", status="terminate", reason=reason)], cuts)
                error = f"no {tool_name} call in the reply"
                messages += [message, {"role": "user", "content": f"Reply with one {tool_name} call."}]
                continue
            try:
                if calls[0]["function"]["name"] != tool_name:
                    raise InvalidFunction(f"unknown tool {calls[0]['function']['name']!r}; call {tool_name}")
                proposal = await accept(call_arguments(calls[0]), attempt, reason)
                proposal.prompt_cuts = cuts
                return proposal
            except STOPS_THE_RUN:
                raise
            except Exception as exc:
                error = rejection(exc)
            messages += [message] + [
                {"role": "tool", "tool_call_id": call["id"],
                 "content": f"Rejected: {error}. Fix it and call {tool_name} again." if i == 0 else "Ignored."}
                for i, call in enumerate(calls)
            ]
        rejected = Action(action=tool_name, status="rejected", error=error, attempts=attempts, reason=reason)
        return Proposal(keep, [rejected], cuts)

    async def added(self, functions: FunctionSet, item: Any) -> FunctionSet:
        """`functions` plus the entry, if it loads, its packages exist and its name is new to the list."""
        function = function_from(item)
        if function.name in functions:
            raise InvalidFunction(f"{function.name!r} is listed twice; give each function once")
        await check_packages(self.sandbox, function)
        return functions.add(function)
