"""What both agents share: the `Rollout` record, the `Agent` interface, and transcript rendering."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from agenttrain.functions import FunctionSet
from agenttrain.tasks.base import AnswerFormat, Example


@dataclass
class FunctionCall:
    name: str
    ok: bool
    error: str | None = None


@dataclass
class Rollout:
    """One conversation of the agent on one task, before scoring."""

    example_id: str
    messages: list[dict[str, Any]]
    prediction: str | None  # the final reply text the scorer extracts an answer from
    stop_reason: str  # answered | terminate | max_turns | llm_error
    turns: int = 0
    function_calls: list[FunctionCall] = field(default_factory=list)
    code_runs: int = 0
    code_errors: int = 0
    error: str | None = None  # why the rollout could not finish (an endpoint that failed for good, ...)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rollout:
        calls = [FunctionCall(**c) for c in data.get("function_calls", [])]
        return cls(**{**data, "function_calls": calls})


class Agent(Protocol):
    async def solve(self, example: Example, functions: FunctionSet) -> Rollout: ...


def answer_instruction(answer_format: AnswerFormat) -> str:
    if answer_format == "boxed":
        return "Put the final answer in \\boxed{}."
    return (
        "Finish with a line `FINAL ANSWER: <answer>`. The answer is a number, as few words as possible, "
        "or a comma-separated list; write numbers without thousands separators or units unless asked, "
        "and strings without articles or abbreviations."
    )


def has_final_answer(text: str, answer_format: AnswerFormat) -> bool:
    if answer_format == "boxed":
        return "\\boxed" in text or "\\fbox" in text
    return "FINAL ANSWER:" in text.upper()


def _render_message(message: dict[str, Any]) -> str:
    role = message.get("role", "?")
    parts = [str(message["content"])] if message.get("content") else []
    for call in message.get("tool_calls") or []:
        function = call.get("function", {})
        parts.append(f"[calls {function.get('name')}({function.get('arguments')})]")
    if role == "tool":
        role = f"tool result ({message.get('name') or message.get('tool_call_id')})"
    return f"{role}: " + "\n".join(parts)


def transcript(messages: list[dict[str, Any]], skip_system: bool = True) -> str:
    """A conversation as readable text, for the optimizer prompt and reports."""
    shown = [m for m in messages if not (skip_system and m.get("role") == "system")]
    return "\n\n".join(_render_message(m) for m in shown)


def parse_tool_arguments(raw: str | None) -> dict[str, Any]:
    """A tool call's JSON arguments; raises ValueError with a reason the model can act on."""
    try:
        arguments = json.loads(raw or "{}")
    except json.JSONDecodeError as exc:
        raise ValueError(f"the arguments are not valid JSON ({exc.msg})") from None
    if not isinstance(arguments, dict):
        raise ValueError("the arguments must be a JSON object")
    return arguments
