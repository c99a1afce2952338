"""The optimizer's edits: the paper's three tools (add, revise, remove a function), applying one validated call,
and checking that a function's declared packages can be imported where the agent's code runs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from agenttrain.endpoint.usage import BudgetExhausted
from agenttrain.errors import UserError
from agenttrain.functions import Function, FunctionSet, InvalidFunction, build_function
from agenttrain.optimizers.prompting import FUNCTION_FIELDS
from agenttrain.rundir.records import Action
from agenttrain.sandbox import CodeSandbox

logger = logging.getLogger(__name__)

# what applying an action may raise that stops the run rather than rejecting the action
STOPS_THE_RUN = (UserError, BudgetExhausted)


def _tool(name: str, description: str, fields: Sequence[str]) -> dict[str, Any]:
    properties = {f: {"type": "string", "description": FUNCTION_FIELDS[f]} for f in fields}
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": list(fields)},
        },
    }


EDIT_TOOLS = [
    _tool("add_function", "Add a new function to the list.", list(FUNCTION_FIELDS)),
    _tool("revise_function", "Replace the function of this name with a new version.", list(FUNCTION_FIELDS)),
    _tool("remove_function", "Remove the function of this name.", ["name"]),
]


def function_from(item: Any) -> Function:
    """A function from a tool call's fields; raises InvalidFunction saying what to fix."""
    if not isinstance(item, dict):
        raise InvalidFunction(f"a function must be an object with the fields {list(FUNCTION_FIELDS)}")
    missing = [f for f in FUNCTION_FIELDS if f not in item]
    if missing:
        raise InvalidFunction(f"missing the fields {missing}")
    return build_function(**{f: item[f] for f in FUNCTION_FIELDS})


def apply_action(functions: FunctionSet, tool: str, arguments: dict[str, Any]) -> tuple[FunctionSet, str]:
    """Validate and apply one tool call; raises InvalidFunction with a reason to show the optimizer."""
    if tool == "remove_function":
        name = arguments.get("name")
        return functions.remove(str(name)), str(name)
    if tool not in ("add_function", "revise_function"):
        raise InvalidFunction(f"unknown tool {tool!r}; use add_function, revise_function or remove_function")
    function = function_from(arguments)
    edited = functions.add(function) if tool == "add_function" else functions.revise(function)
    return edited, function.name


async def check_packages(sandbox: CodeSandbox, function: Function) -> None:
    """Raises InvalidFunction when the packages `function` declares cannot be imported in the sandbox."""
    if not function.packages:
        return
    try:
        missing = await sandbox.missing_packages(function.packages)
    except UserError as exc:  # e.g. `pip install` of a package that does not exist
        raise InvalidFunction(str(exc)) from None
    if missing:
        raise InvalidFunction(sandbox.refusal(missing))


def rejection(exc: Exception) -> str:
    """Why an action is rejected: an invalid action's reason, or an error no check foresaw (logged with its
    traceback). Either way the action pays for what the optimizer wrote, not the run: the reply is in the response
    cache, and a run ended by it would end the same way on every resume."""
    if isinstance(exc, ValueError):  # InvalidFunction, unreadable arguments
        return str(exc)
    logger.error("an optimizer action failed unexpectedly", exc_info=exc)
    return f"internal error: {exc!r}"


def list_changes(old: FunctionSet, new: FunctionSet, attempts: int = 1, reason: str | None = None) -> list[Action]:
    """A replaced list as the add/revise/remove actions it amounts to, so lineage and diff read it as usual."""
    changes = [Action(action="remove_function", name=name, attempts=attempts, reason=reason)
               for name in old.names if name not in new]
    for function in new:
        before = old.get(function.name)
        if before is None:
            changes.append(Action(action="add_function", name=function.name, attempts=attempts, reason=reason))
        elif before != function:
            changes.append(Action(action="revise_function", name=function.name, attempts=attempts, reason=reason))
    return changes
