"""Helpers to script the fake server's two callers: the agent and the optimizer (recognised by its tools)."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.support.fake_openai import Reply, tool_call, tool_calls

OBSERVATION = re.compile(r"^Observation(?: \d+)?: ")
REACT_TOOL = re.compile(r"^(\w+): .*\n  arguments \(JSON schema\):", re.MULTILINE)
BOXED = re.compile(r"\\boxed\{.*\}")


def is_optimizer(body: dict[str, Any]) -> bool:
    return any(t["function"]["name"] == "add_function" for t in body.get("tools") or [])


def is_react(body: dict[str, Any]) -> bool:
    """The ReAct agent sends no API tools; its system prompt teaches the text format instead."""
    first = body["messages"][0]
    return not body.get("tools") and first["role"] == "system" and "Action Input:" in str(first["content"])


def offered_tools(body: dict[str, Any]) -> tuple[str, ...]:
    """The learned functions the agent may call (the ReAct agent lists them, after `python`, as text)."""
    if is_react(body):
        return tuple(name for name in REACT_TOOL.findall(body["messages"][0]["content"]) if name != "python")
    return tuple(t["function"]["name"] for t in body.get("tools") or [])


def tool_outputs(messages: list[dict[str, Any]]) -> list[str]:
    """What tools returned: tool messages, or the text of the ReAct agent's `Observation:` messages."""
    outputs = []
    for message in messages:
        content = str(message.get("content"))
        if message.get("role") == "tool":
            outputs.append(content)
        elif message.get("role") == "user" and (observed := OBSERVATION.match(content)):
            outputs.append(content[observed.end() :])
    return outputs


def tool_results(body: dict[str, Any]) -> list[str]:
    return tool_outputs(body["messages"])


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


def react_action(tool: str, arguments: dict[str, Any] | str, number: int | None = None) -> Reply:
    label = f"Action {number}" if number is not None else "Action"
    written = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return Reply(content=f"Thought: I use {tool}.\n{label}: {tool}\n{label} Input: {written}")


def react_answer(answer: object) -> Reply:
    return Reply(content=f"Thought: I now know the final answer.\nFINAL ANSWER: {answer}")


def as_react(reply: Reply) -> Reply:
    """A scripted function-calling reply in ReAct form: one call becomes an Action; several calls become one
    python Action that prints each function's result; a code block becomes a python Action; a boxed answer
    becomes `FINAL ANSWER: \\boxed{..}`; any other text stays as it is."""
    calls = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in reply.tool_calls]
    content = reply.content or ""
    if len(calls) == 1:
        return react_action(*calls[0])
    if calls:
        return react_action("python", "\n".join(f"print({name}(**{arguments!r}))" for name, arguments in calls))
    if code := re.search(r"```python\n.*?```", content, re.DOTALL):
        return react_action("python", code[0])
    if boxed := BOXED.search(content):
        return react_answer(boxed[0])
    return reply


def agent_reply(body: dict[str, Any], reply: Reply) -> Reply:
    """A scripted agent's reply, in the text form the ReAct agent reads when the request is from it."""
    return as_react(reply) if is_react(body) else reply
