"""Helpers to script the fake server's two callers: the agent and the optimizer (recognised by its tools)."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.fake_openai import Reply, tool_call, tool_calls


def is_optimizer(body: dict[str, Any]) -> bool:
    return any(t["function"]["name"] == "add_function" for t in body.get("tools") or [])


def offered_tools(body: dict[str, Any]) -> tuple[str, ...]:
    return tuple(t["function"]["name"] for t in body.get("tools") or [])


def tool_results(body: dict[str, Any]) -> list[str]:
    return [str(m.get("content")) for m in body["messages"] if m.get("role") == "tool"]


def question(body: dict[str, Any]) -> str:
    return next(str(m["content"]) for m in body["messages"] if m["role"] == "user")


def numbers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", text)]


def _section(prompt: str, start: str, end: str) -> str:
    return prompt.split(start, 1)[1].split(end, 1)[0]


def list_a(body: dict[str, Any]) -> str:
    return _section(body["messages"][1]["content"], "## List A", "## List B")


def list_b(body: dict[str, Any]) -> str:
    return _section(body["messages"][1]["content"], "## List B", "## Function lists")


def has_rejected_sets(body: dict[str, Any]) -> bool:
    return "Rejected set" in body["messages"][1]["content"]


def function_payload(name: str, code: str, arguments: dict[str, Any] | None = None) -> dict[str, str]:
    arguments = arguments or {"a": {"type": "integer"}, "b": {"type": "integer"}}
    return {"name": name, "description": f"The {name} function.", "arguments": json.dumps(arguments),
            "packages": "", "code": code}


def add(name: str, code: str, arguments: dict[str, Any] | None = None) -> Reply:
    return tool_call("add_function", function_payload(name, code, arguments))


def revise(name: str, code: str, arguments: dict[str, Any] | None = None) -> Reply:
    return tool_call("revise_function", function_payload(name, code, arguments))


def add_many(*functions: tuple[str, str, dict[str, Any] | None]) -> Reply:
    return tool_calls([("add_function", function_payload(*f)) for f in functions])


def boxed(value: object) -> Reply:
    return Reply(content=f"The answer is \\boxed{{{value}}}.")


MULTIPLY = "def multiply(a, b):\n    return a * b\n"
MULTIPLY_WRONG = "def multiply(a, b):\n    return a + b\n"
TERMINATE = Reply(content="TERMINATE")


def multiplying_agent(body: dict[str, Any]) -> Reply:
    """Answers "What is A times B?" right only through the learned `multiply` tool's real output."""
    results = tool_results(body)
    if results:
        found = numbers(results[-1])
        return boxed(found[-1] if found else "no result")
    if "multiply" in offered_tools(body):
        a, b = numbers(question(body))[:2]
        return tool_call("multiply", {"a": a, "b": b})
    return boxed(0)
