"""Reading a ReAct reply: the action and its arguments, or the final answer. Pure functions, no I/O.

Models write this format loosely, so the reader accepts the paper's numbered form (`Action 1:`), markdown
bold around the keywords, arguments inside code fences, Python-style dicts (single quotes, trailing
commas, `True`) and a bare value for a one-argument tool. What it cannot read becomes a `ValueError` whose
message is shown to the model as the observation, so the model can correct itself.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from agenttrain.untrusted import literal, loads

# A keyword at the start of a line, optionally bold (`**Action:**`) and numbered (`Action 2:`, `Action 2 Input:`).
_KEYWORD = r"^[ \t]*[*_]*{word}[*_]*[ \t]*:[*_]*[ \t]*"
_NUMBER = r"(?:[ \t]*(\d+))?"
ACTION = re.compile(_KEYWORD.format(word=rf"Action{_NUMBER}"), re.MULTILINE | re.IGNORECASE)
ACTION_INPUT = re.compile(_KEYWORD.format(word=rf"Action{_NUMBER}[ \t]+Input{_NUMBER}"), re.MULTILINE | re.IGNORECASE)
OBSERVATION = re.compile(_KEYWORD.format(word=rf"Observation{_NUMBER}"), re.MULTILINE | re.IGNORECASE)
# Where an action input ends: the next line that starts another part of the format.
NEXT_PART = re.compile(
    r"^[ \t]*[*_]*(?:Thought|Action|Observation|Final[ \t]+Answer)\b[^:\n]{0,12}:", re.MULTILINE | re.IGNORECASE
)
FINAL_ANSWER = re.compile(r"FINAL[ \t]+ANSWER[*_]*[ \t]*:[*_]*", re.IGNORECASE)
FENCED = re.compile(r"^```[\w+-]*[ \t]*\n?(.*?)\n?(?:```|\Z)", re.DOTALL)  # unclosed when cut by max_tokens
# A quoted string (left as it is) or a JSON literal word (turned into its Python spelling).
_STRING_OR_JSON_WORD = re.compile(r""""(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|\b(true|false|null)\b""")
_PYTHON_WORDS = {"true": "True", "false": "False", "null": "None"}


@dataclass(frozen=True)
class Action:
    tool: str
    input: str  # the text after `Action Input:`, as written ("" when there is none)
    number: int | None = None  # the step number of the numbered form, echoed in its observation


@dataclass(frozen=True)
class Step:
    """One reply, read. At most one of `action`, `final_answer` and `problem` is set; none means the model
    neither acted nor answered."""

    text: str  # the reply without any observation the model wrote itself
    action: Action | None = None
    final_answer: str | None = None
    problem: str | None = None  # an action that could not be read, said so the model can fix it


def cut_invented_observation(text: str) -> str:
    """The reply up to the first `Observation:` line: observations come from the tools, never the model."""
    match = OBSERVATION.search(text)
    return text[: match.start()].rstrip() if match else text


def parse_reply(text: str) -> Step:
    """Read one reply; whichever of an action and a final answer comes first is what the model meant."""
    text = cut_invented_observation(text or "")
    action, answers = ACTION.search(text), list(FINAL_ANSWER.finditer(text))
    answered_first = answers and not (action and action.start() < answers[0].start())
    if answered_first and (stated := text[answers[-1].end() :].strip()):  # the last marker, as scorers read it
        return Step(text, final_answer=stated)
    if action:
        return _read_action(text, action)
    if ACTION_INPUT.search(text):
        return Step(text, problem="there is an `Action Input:` but no `Action:` line naming the tool to use")
    return Step(text)


def _read_action(text: str, action: re.Match[str]) -> Step:
    line_end = text.find("\n", action.end())
    tool = text[action.end() : line_end if line_end >= 0 else len(text)].strip().strip("`'\"*").rstrip(".")
    if not tool:
        return Step(text, problem="the `Action:` line names no tool")
    number = int(action[1]) if action[1] else None
    action_input = ACTION_INPUT.search(text, action.end())
    raw = _input_text(text, action_input.end()) if action_input else ""
    return Step(text, action=Action(tool, raw, number))


def _input_text(text: str, start: int) -> str:
    """The action input: a whole fenced block, else everything up to the next part of the format."""
    rest = text[start:].lstrip()
    if rest.startswith("```"):
        closing = rest.find("```", 3)
        return rest[: closing + 3] if closing >= 0 else rest
    following = NEXT_PART.search(rest)
    return rest[: following.start() if following else len(rest)].strip()


def unfence(text: str) -> str:
    text = text.strip()
    match = FENCED.match(text)
    return match[1].strip() if match else text


def read_literal(text: str) -> Any:
    """JSON, else a Python literal (single quotes, trailing commas; JSON's true/false/null understood).

    Never evaluates code: `ast.literal_eval` accepts literals only. Raises ValueError with JSON's reason.
    """
    try:
        return loads(text, strict=False)  # strict=False: raw newlines inside strings, as in code
    except json.JSONDecodeError as exc:
        reason = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    python_spelling = _STRING_OR_JSON_WORD.sub(lambda m: _PYTHON_WORDS.get(m[1], m[0]) if m[1] else m[0], text)
    try:
        return literal(python_spelling)
    except ValueError:
        raise ValueError(reason) from None


def parse_arguments(raw: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """A tool's arguments from its `Action Input`, checked against its JSON schema.

    A one-parameter tool also takes a bare value: `Action Input: 17`, or code as it is for `python`. A
    string parameter receives the text as written unless the input is a JSON string or an object.
    """
    text = unfence(raw)
    names = list(parameters.get("properties", {}))
    try:
        value = read_literal(text) if text else {}
    except ValueError as exc:
        if len(names) != 1:
            raise ValueError(f"`Action Input` is not a JSON object ({exc}); {_expected(parameters)}") from None
        value = text
    if not isinstance(value, dict) and len(names) == 1:
        keeps_text = parameters["properties"][names[0]].get("type") == "string" and not isinstance(value, str)
        value = {names[0]: text if keeps_text else value}
    if not isinstance(value, dict):
        raise ValueError(f"`Action Input` must be a JSON object; {_expected(parameters)}")
    check_arguments(value, parameters)
    return value


def check_arguments(arguments: dict[str, Any], parameters: dict[str, Any]) -> None:
    """Raise ValueError naming missing and unknown argument names; the values' types are the tool's business."""
    properties = parameters.get("properties", {})
    problems = []
    if missing := [name for name in parameters.get("required", []) if name not in arguments]:
        problems.append(f"missing {', '.join(missing)}")
    if unknown := [str(name) for name in arguments if name not in properties]:
        problems.append(f"unknown {', '.join(unknown)}")
    if problems:
        raise ValueError(f"wrong arguments ({'; '.join(problems)}); {_expected(parameters)}")


def _expected(parameters: dict[str, Any]) -> str:
    names = list(parameters.get("properties", {}))
    if not names:
        return "this tool takes no arguments: write `Action Input: {}`"
    example = ", ".join(f'"{name}": ...' for name in names)
    return f"write `Action Input: {{{example}}}`"
