"""A rollout's messages as a conversation to read: who speaks, text and code apart, tool calls with their
arguments, and what each tool, code block or ReAct action returned. Pure functions of the messages."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from agenttrain.agents.assistant import extract_code_blocks
from agenttrain.agents.react_parse import OBSERVATION
from agenttrain.untrusted import loads

# A fenced block; an unclosed one (a reply cut by max_tokens) runs to the end of the text.
FENCE = re.compile(r"```([\w+-]*)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


@dataclass(frozen=True)
class Segment:
    kind: str  # text | code | reasoning
    text: str
    language: str = "text"


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # pretty JSON when the model wrote valid JSON, else as written
    language: str  # json | text


@dataclass(frozen=True)
class Turn:
    number: int  # position in the message list, for anchors
    role: str  # system | user | assistant | tool
    label: str  # what the message is: system prompt, task, sandbox output, observation, tool result, ...
    segments: list[Segment]
    tool_calls: list[ToolCall]
    tool_call_id: str | None = None


def content_text(content: Any) -> str:
    """Message content as text: a string, the text parts of a list of parts, or JSON for anything else."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return json.dumps(content, ensure_ascii=False, indent=2)


def split_fences(text: str) -> list[Segment]:
    """Text and fenced code blocks in order; empty text between blocks is dropped."""
    segments, start = [], 0
    for match in FENCE.finditer(text):
        if text[start : match.start()].strip():
            segments.append(Segment("text", text[start : match.start()].strip("\n")))
        segments.append(Segment("code", match.group(2).rstrip("\n"), match.group(1).lower() or "text"))
        start = match.end()
    if text[start:].strip():
        segments.append(Segment("text", text[start:].strip("\n")))
    return segments


def tool_call(call: dict[str, Any]) -> ToolCall:
    function = call.get("function")
    if not isinstance(function, dict):
        function = {}  # a malformed call is shown with what it has, not as a failed page
    raw = function.get("arguments")
    try:
        parsed = loads(raw) if isinstance(raw, str) else raw
        arguments, language = json.dumps(parsed, ensure_ascii=False, indent=2), "json"
    except (json.JSONDecodeError, TypeError):
        arguments, language = str(raw), "text"
    return ToolCall(str(call.get("id", "")), str(function.get("name", "?")), arguments, language)


def _reasoning(message: dict[str, Any]) -> str | None:
    """The thinking some servers return beside the reply (vLLM and DeepSeek: `reasoning_content`)."""
    value = message.get("reasoning_content") or message.get("reasoning")
    return content_text(value) if value else None


def _user_label(index: int, text: str, previous: dict[str, Any] | None) -> str:
    if previous is None or (index == 1 and previous.get("role") == "system"):
        return "task"
    if OBSERVATION.match(text):
        return "observation"
    if previous.get("role") == "assistant" and extract_code_blocks(content_text(previous.get("content"))):
        return "sandbox output"
    return "user"


def _label(index: int, message: dict[str, Any], text: str, previous: dict[str, Any] | None) -> str:
    role = message.get("role")
    if role == "system":
        return "system prompt"
    if role == "user":
        return _user_label(index, text, previous)
    if role == "tool":
        return f"result of {message.get('name') or 'tool'}"
    return str(role or "message")


def conversation(messages: list[dict[str, Any]]) -> list[Turn]:
    turns = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            message = {"role": "unknown", "content": message}
        text = content_text(message.get("content"))
        previous = messages[index - 1] if index and isinstance(messages[index - 1], dict) else None
        label = _label(index, message, text, previous)
        # Sandbox output and tool results are shown as written: fences inside them are program output.
        keep_whole = label in ("sandbox output", "observation") or message.get("role") == "tool"
        segments = [Segment("text", text)] if keep_whole or message.get("role") == "system" else split_fences(text)
        if thinking := _reasoning(message):
            segments.insert(0, Segment("reasoning", thinking))
        turns.append(Turn(
            number=index, role=str(message.get("role", "unknown")), label=label, segments=segments,
            tool_calls=[tool_call(c) for c in message.get("tool_calls") or [] if isinstance(c, dict)],
            tool_call_id=message.get("tool_call_id"),
        ))
    return turns
