"""AgentOptimizer: an LLM edits the function set one action at a time (add, revise, remove, or TERMINATE)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from agenttrain.agents.base import call_arguments, transcript
from agenttrain.config import OptimizerConfig
from agenttrain.endpoint.client import ContextOverflow, LLMClient
from agenttrain.endpoint.context_window import server_context_size
from agenttrain.errors import UserError
from agenttrain.functions import FunctionSet, InvalidFunction, build_function
from agenttrain.sandbox import CodeSandbox

CHARS_PER_TOKEN = 4  # a coarse, tokenizer-free estimate; the budget is a safety limit, not a bill
MIN_HISTORY_CHARS = 1500
MAX_SHRINKS = 4  # a request the server finds too long is resent with half the budget, at most this often

EXAMPLE_FUNCTION = """An example of a good function:
name: evaluate_expression
description: Evaluate a mathematical expression with sympy and return the result.
arguments: {"expression": {"type": "string", "description": "A sympy-parsable expression, e.g. '2*x + 3'"}}
packages: sympy
code:
def evaluate_expression(expression):
    import sympy
    try:
        value = sympy.sympify(expression)
    except sympy.SympifyError as error:
        return f"Could not parse the expression: {error}"
    return float(value) if value.is_number else str(value)"""

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

FUNCTION_FIELDS = {
    "name": "The function's name, a Python identifier.",
    "description": "What the function does, for the assistant that will call it.",
    "arguments": 'JSON object mapping each parameter name to its JSON schema, e.g. {"x": {"type": "number"}}.',
    "packages": "The pip packages the code imports, space-separated; empty string if none.",
    "code": "The complete Python source, starting with `def <name>(`.",
}


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


OPTIMIZER_TOOLS = [
    _tool("add_function", "Add a new function to the list.", list(FUNCTION_FIELDS)),
    _tool("revise_function", "Replace the function of this name with a new version.", list(FUNCTION_FIELDS)),
    _tool("remove_function", "Remove the function of this name.", ["name"]),
]
TOOLS_CHARS = len(json.dumps(OPTIMIZER_TOOLS))  # the schemas are sent with every request and count too


@dataclass
class ActionRecord:
    action: str  # add_function | revise_function | remove_function | terminate
    name: str | None = None
    status: str = "applied"  # applied | rejected | terminate
    error: str | None = None  # why the last attempt was rejected
    attempts: int = 1
    reason: str | None = None  # the optimizer's own words next to the call, when it gave any
    tasks: list[str] | None = None  # tool creation: the training tasks the function was written for

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "tasks" or v is not None}


@dataclass
class StepResult:
    functions: FunctionSet
    actions: list[ActionRecord] = field(default_factory=list)


@dataclass(frozen=True)
class TrainingRecord:
    """What the optimizer sees of one training task."""

    example_id: str
    correct: bool
    messages: list[dict[str, Any]]


def render_functions(functions: FunctionSet) -> str:
    if not functions:
        return "(no functions yet: the assistant has only its Python interpreter)"
    return "\n\n".join(
        f"name: {f.name}\ndescription: {f.description}\narguments: {json.dumps(f.parameters['properties'])}\n"
        f"packages: {' '.join(f.packages) or '(none)'}\ncode:\n```python\n{f.code.rstrip()}\n```"
        for f in functions
    )


def _shorten(text: str, limit: int) -> str:
    """Keep the start (the task) and the end (the outcome) of a long conversation."""
    if len(text) <= limit:
        return text
    half = max(limit // 2 - 40, 0)
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters omitted ...]\n{text[-half:]}"


def render_histories(records: Sequence[TrainingRecord], char_budget: int) -> str:
    """Failed tasks first (they teach the most), each shortened so that several fit; the rest are counted."""
    ordered = sorted(records, key=lambda r: r.correct)
    per_history = max(MIN_HISTORY_CHARS, char_budget // max(len(ordered), 1))
    parts, used, omitted = [], 0, 0
    for record in ordered:
        verdict = "SOLVED" if record.correct else "FAILED"
        block = f"### Task {record.example_id} ({verdict})\n{_shorten(transcript(record.messages), per_history)}"
        if used + len(block) > char_budget:
            omitted += 1
            continue
        parts.append(block)
        used += len(block)
    if omitted:
        parts.append(f"({omitted} more conversations omitted to fit the prompt budget)")
    return "\n\n".join(parts)


def build_prompt(
    best: FunctionSet,
    best_accuracy: float,
    current: FunctionSet,
    rejected: Sequence[tuple[FunctionSet, float]],
    records: Sequence[TrainingRecord],
    max_prompt_tokens: int,
    closing: str = "Take one action on List B now, or reply TERMINATE.",
) -> str:
    """The user message of one optimizer call; with the system prompt and the tool schemas it stays within
    `max_prompt_tokens` (histories are what gets cut)."""
    table = "\n".join(f"{r.example_id}: {int(r.correct)}" for r in records)
    rejected_text = "\n\n".join(
        f"Rejected set (training success rate {score:.2f}):\n{render_functions(fs)}"
        for fs, score in sorted(rejected, key=lambda item: item[1])
    ) or "(none)"
    fixed = (
        f"## List A: the best function list so far (training success rate {best_accuracy:.2f})\n"
        f"{render_functions(best)}\n\n"
        f"## List B: the list after the actions you have taken in this step\n{render_functions(current)}\n\n"
        f"## Function lists that were tried and rolled back because they did not improve, worst first\n"
        f"{rejected_text}\n\n"
        f"## Result per training task (1 solved, 0 failed)\n{table}\n\n"
        "## Conversations of the assistant with List A\n"
    )
    budget = max_prompt_tokens * CHARS_PER_TOKEN - len(SYSTEM_PROMPT) - TOOLS_CHARS - len(fixed)
    closing = f"\n\n{closing}"
    return fixed + render_histories(records, max(budget - len(closing), 0)) + closing


def apply_action(functions: FunctionSet, tool: str, arguments: dict[str, Any]) -> tuple[FunctionSet, str]:
    """Validate and apply one tool call; raises InvalidFunction with a reason to show the optimizer."""
    if tool == "remove_function":
        name = arguments.get("name")
        return functions.remove(str(name)), str(name)
    if tool not in ("add_function", "revise_function"):
        raise InvalidFunction(f"unknown tool {tool!r}; use add_function, revise_function or remove_function")
    missing = [f for f in FUNCTION_FIELDS if f not in arguments]
    if missing:
        raise InvalidFunction(f"{tool} needs the fields {missing}")
    function = build_function(**{f: arguments[f] for f in FUNCTION_FIELDS})
    edited = functions.add(function) if tool == "add_function" else functions.revise(function)
    return edited, function.name


def sample_index(epoch: int, position: int, attempt: int) -> int:
    """A distinct, reproducible sample number for every optimizer call of a run: the response cache replays a
    rerun exactly, but never answers a later call (another epoch, action or retry) with an earlier reply,
    even when its prompt is the same (after a TERMINATE, or an action rejected for good)."""
    return (epoch * 100 + position) * 100 + attempt


def _outcome_text(error: str | None) -> str:
    if error is None:
        return "Applied."
    if not error:
        return "Not applied: the step's action limit was reached."
    return f"Rejected: {error}. Fix it and call the tool again."


def _tokens(messages: Sequence[dict[str, Any]]) -> int:
    return len(json.dumps(messages)) // CHARS_PER_TOKEN


class AgentOptimizer:
    def __init__(self, client: LLMClient, config: OptimizerConfig, sandbox: CodeSandbox) -> None:
        self.client = client
        self.config = config
        self.sandbox = sandbox  # answers whether a function's declared packages can be imported
        self._prompt_limit: int | None = None  # tokens a request may take; found on the first call

    async def step(
        self,
        best: FunctionSet,
        best_accuracy: float,
        records: Sequence[TrainingRecord],
        rejected: Sequence[tuple[FunctionSet, float]],
        epoch: int,
    ) -> StepResult:
        """Up to `max_actions` calls; each reply's tool calls are applied in order, each one an action."""
        result = StepResult(functions=best)
        while len(result.actions) < self.config.max_actions:
            prompt = partial(build_prompt, best, best_accuracy, result.functions, rejected, records)
            if not await self._one_call(prompt, result, epoch):
                break
        return result

    async def prompt_limit(self) -> int:
        """Tokens one request may take: `max_prompt_tokens`, and no more than the server's context window
        (where it says how big that is) less the room kept for the reply."""
        if self._prompt_limit is None:
            window = await asyncio.to_thread(server_context_size, self.client.settings.resolved_base_url())
            limit = self.config.max_prompt_tokens
            self._prompt_limit = limit if window is None else min(limit, window - (self.config.max_tokens or 0))
        return self._prompt_limit

    async def _request(self, prompt: Callable[[int], str], extra: list[dict[str, Any]], index: int) -> dict[str, Any]:
        """One request: the prompt rebuilt to fit next to the retry conversation `extra`; a server context
        error halves the budget and asks again (the budget stays halved for the rest of the run)."""
        for _ in range(MAX_SHRINKS + 1):
            tokens = await self.prompt_limit() - _tokens(extra)
            messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt(tokens)},
                        *extra]
            try:
                reply = await self.client.chat(
                    messages, model=self.config.model, params=self.config, tools=OPTIMIZER_TOOLS, sample_index=index
                )
            except ContextOverflow as overflow:
                self._prompt_limit = max((self._prompt_limit or 0) // 2, 1)
                error = str(overflow)
                continue
            return reply.message
        raise ContextOverflow(error)

    async def _one_call(self, prompt: Callable[[int], str], result: StepResult, epoch: int) -> bool:
        """One optimizer request (with retries for invalid actions). False once the model says TERMINATE, or
        when even a shortened request does not fit the model's context."""
        messages: list[dict[str, Any]] = []  # the retry conversation after the prompt
        for attempt in range(1, self.config.max_action_retries + 2):
            try:
                message = await self._request(prompt, messages, sample_index(epoch, len(result.actions), attempt))
            except ContextOverflow as exc:
                result.actions.append(ActionRecord("terminate", status="rejected", error=str(exc), attempts=attempt))
                return False
            calls = message.get("tool_calls") or []
            reason = (message.get("content") or "").strip() or None
            if not calls:
                if "TERMINATE" in (reason or "").upper() or attempt > self.config.max_action_retries:
                    result.actions.append(ActionRecord("terminate", status="terminate", reason=reason))
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
        self, calls: list[dict[str, Any]], result: StepResult, reason: str | None, attempt: int
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
                await self._check_packages(edited, name)
            except (InvalidFunction, ValueError) as exc:
                outcomes[call["id"]] = str(exc)
                if attempt > self.config.max_action_retries:
                    result.actions.append(ActionRecord(tool, None, "rejected", str(exc), attempt, reason))
                continue
            outcomes[call["id"]] = None
            result.functions = edited
            result.actions.append(ActionRecord(tool, name, "applied", None, attempt, reason))
        return outcomes

    async def _check_packages(self, functions: FunctionSet, name: str) -> None:
        function = functions.get(name)
        if not (function and function.packages):
            return
        try:
            missing = await self.sandbox.missing_packages(function.packages)
        except UserError as exc:  # e.g. `pip install` of a package that does not exist
            raise InvalidFunction(str(exc)) from None
        if missing:
            raise InvalidFunction(self.sandbox.refusal(missing))
