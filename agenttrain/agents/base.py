"""What both agents share: the `Agent` interface and the `SandboxAgent` skeleton, which fills a `Rollout` record
(agenttrain.rundir.records), running calls in the task's sandbox session, and transcript rendering."""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from agenttrain.config import AgentConfig
from agenttrain.endpoint.client import ChatReply, ContextOverflow, LLMClient, LLMError, RequestRefused
from agenttrain.endpoint.usage import BudgetExhausted
from agenttrain.errors import UserError
from agenttrain.functions import FunctionSet
from agenttrain.rundir.records import FunctionCallRecord, Rollout
from agenttrain.sandbox import CodeSandbox, CodeSession, ExecResult
from agenttrain.tasks.base import AnswerFormat, Example
from agenttrain.untrusted import loads, scrub

logger = logging.getLogger(__name__)


class Agent(Protocol):
    async def solve(self, example: Example, functions: FunctionSet) -> Rollout: ...


class SandboxAgent(ABC):
    """What both agents do around their conversation loop: one sandbox session per task, the system
    prompt and the task as the first messages, an endpoint failure recorded as "llm_error", a conversation
    that outgrew the model's context as "context_length" (the model's limit, not the endpoint's failure), one
    the endpoint refused for what it holds as "request_refused", and any other error as "internal_error": what
    a model writes costs at most its rollout (a cached reply would otherwise end every resume the same way)."""

    def __init__(
        self, client: LLMClient, config: AgentConfig, sandbox: CodeSandbox, answer_format: AnswerFormat
    ) -> None:
        self.client = client
        self.config = config
        self.sandbox = sandbox
        self.answer_format = answer_format

    async def solve(self, example: Example, functions: FunctionSet) -> Rollout:
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": self.system_prompt(functions)},
            {"role": "user", "content": example.question},
        ]
        rollout = Rollout(id=example.id, messages=messages, prediction=None, stop_reason="max_turns")
        async with self.sandbox.session(functions, files=example.files) as session:
            try:
                await self.converse(rollout, functions, ValidText(session))
            except ContextOverflow:  # the conversation ends where it stands and is scored; not an error
                rollout.stop_reason = "context_length"
            except RequestRefused as exc:  # the conversation or the functions hold what the endpoint refuses
                rollout.stop_reason, rollout.error = "request_refused", str(exc)
            except LLMError as exc:
                rollout.stop_reason, rollout.error = "llm_error", str(exc)
            except (UserError, BudgetExhausted):
                raise  # the run stops: the endpoint is gone, the budget spent, the sandbox cannot run
            except Exception as exc:  # a reply no handler foresaw: recorded, with the traceback in the log
                logger.exception("rollout %s ended by an unexpected error", example.id)
                rollout.stop_reason, rollout.error = "internal_error", f"internal error: {exc!r}"
        rollout.prediction = self.prediction(rollout.messages)
        return rollout

    async def ask(self, messages: list[dict[str, Any]], **options: Any) -> ChatReply:
        """One completion with the agent's model settings; `options` are `LLMClient.chat`'s (tools, stop)."""
        return await self.client.chat(messages, model=self.config.model, params=self.config, **options)

    @abstractmethod
    def system_prompt(self, functions: FunctionSet) -> str: ...

    @abstractmethod
    async def converse(self, rollout: Rollout, functions: FunctionSet, session: CodeSession) -> None:
        """Extend `rollout.messages` turn by turn; set `turns` and, when the model finishes, `stop_reason`."""

    @abstractmethod
    def prediction(self, messages: list[dict[str, Any]]) -> str | None:
        """The text the scorer reads the answer from."""


class ValidText:
    """A session whose results are valid Unicode: code output and exception messages are the model's code's text, and
    a lone surrogate in them could not be encoded into the next request, the journal or a web page."""

    def __init__(self, session: CodeSession) -> None:
        self.session = session
        self.workdir: Path = session.workdir

    async def run_code(self, code: str) -> ExecResult:
        return scrubbed(await self.session.run_code(code))

    async def call_function(self, name: str, arguments: dict[str, Any]) -> ExecResult:
        return scrubbed(await self.session.call_function(name, arguments))


def scrubbed(result: ExecResult) -> ExecResult:
    error, value = result.error, result.value
    return replace(result, output=scrub(result.output), error=error if error is None else scrub(error),
                   value=value if value is None else scrub(value))


async def call_function(rollout: Rollout, session: CodeSession, name: str, arguments: dict[str, Any]) -> str:
    """Run a learned function in the task's session, record the call, and return what the model sees."""
    result = await session.call_function(name, arguments)
    observation = result.as_observation()
    rollout.function_calls.append(FunctionCallRecord(name=name, ok=result.ok, error=result.error,
                                                     arguments=arguments, result=observation))
    return observation


def reject_call(rollout: Rollout, name: str, problem: str) -> str:
    """Record a function call that could not be made (unknown name, unreadable arguments); returns the
    error the model sees."""
    observation = f"Error: {problem}"
    rollout.function_calls.append(FunctionCallRecord(name=name, ok=False, error=problem, result=observation))
    return observation


async def run_code(rollout: Rollout, session: CodeSession, code: str) -> str:
    """Run model-written code in the task's persistent interpreter, count it, and return its output."""
    result = await session.run_code(code)
    rollout.code_runs += 1
    rollout.code_errors += not result.ok
    return result.as_observation()


# GAIA's answer rules, which its quasi-exact-match scorer relies on.
FINAL_ANSWER_RULES = (
    "The answer is a number, as few words as possible, or a comma-separated list; write numbers without "
    "thousands separators or units unless asked, and strings without articles or abbreviations."
)


def answer_instruction(answer_format: AnswerFormat) -> str:
    if answer_format == "boxed":
        return "Put the final answer in \\boxed{}."
    return f"Finish with a line `FINAL ANSWER: <answer>`. {FINAL_ANSWER_RULES}"


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


def transcript(messages: list[dict[str, Any]]) -> str:
    """A conversation as readable text, without its system prompt, for the optimizer prompt and reports."""
    shown = [m for m in messages if m.get("role") != "system"]
    return "\n\n".join(_render_message(m) for m in shown)


def parse_tool_arguments(raw: str | None) -> dict[str, Any]:
    """A tool call's JSON arguments; raises ValueError with a reason the model can act on."""
    try:
        arguments = loads(raw or "{}")
    except json.JSONDecodeError as exc:
        raise ValueError(f"the arguments are not valid JSON ({exc.msg})") from None
    if not isinstance(arguments, dict):
        raise ValueError("the arguments must be a JSON object")
    return arguments


def call_arguments(call: dict[str, Any]) -> dict[str, Any]:
    """A tool call's arguments (`parse_tool_arguments`). Unreadable ones (a small model's partial JSON) are
    replaced by `{}` in the call itself, since the call stays in the conversation and servers refuse a
    conversation holding broken JSON (llama.cpp: HTTP 500); the ValueError quotes what the model wrote."""
    raw = call["function"].get("arguments")
    try:
        return parse_tool_arguments(raw)
    except ValueError as exc:
        call["function"]["arguments"] = "{}"
        raise ValueError(f"{exc}: {str(raw)[:200]!r}") from None
