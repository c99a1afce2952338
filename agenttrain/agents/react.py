"""The paper's ReAct agent: tools listed as text, plain-text turns of Thought / Action / Action Input, and
the tool's result sent back as the next user message, `Observation: ...`.

How the rollout ends: with `FINAL ANSWER: ...` under the GAIA formatting rules. For tasks scored on a boxed
answer (MATH) the model is asked for `FINAL ANSWER: \\boxed{...}`, and the prediction handed to the scorer is
that box alone (the answer gets boxed if the model forgot): every boxed scorer reads it, while one that
prefers a `FINAL ANSWER:` marker would otherwise read the box's LaTeX as the answer. For the other tasks
the prediction is `FINAL ANSWER: <answer>`, whatever capitalisation the model used for the marker.
"""

from __future__ import annotations

from typing import Any

from agenttrain.agents.base import (
    FINAL_ANSWER_RULES,
    Rollout,
    SandboxAgent,
    call_function,
    has_final_answer,
    reject_call,
    run_code,
)
from agenttrain.agents.react_parse import Action, parse_arguments, parse_reply
from agenttrain.config import AgentConfig
from agenttrain.endpoint.client import LLMClient
from agenttrain.functions import Function, FunctionSet
from agenttrain.registry import agents
from agenttrain.sandbox import CodeSandbox, CodeSession
from agenttrain.tasks.base import AnswerFormat

# Described like a learned function so that the model sees one uniform tool list; it never runs as one.
PYTHON_TOOL = Function(
    name="python",
    description="Runs Python code in a persistent interpreter (variables and imports stay defined between "
    "calls) and returns what it prints; the value of a last bare expression is printed too.",
    parameters={"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]},
    code="",
)

# A server that honours these never lets the model write its own observation; the parser cuts it otherwise.
STOP_SEQUENCES = ["Observation:", "\nObservation"]

SYSTEM_PROMPT = """You solve tasks step by step with the help of these tools:

{tools}

Reply with one step at a time, in exactly this format:

Thought: what you know so far and what to do next
Action: the name of one tool from the list
Action Input: the tool's arguments as one JSON object, such as {{"code": "print(6 * 7)"}}

Then stop. The tool's result comes back to you as `Observation: ...`, and you continue with a new Thought. \
For python, print() what you need to see, and prefer exact arithmetic (fractions, radicals, sympy) over \
floating point. When you know the answer, reply with:

Thought: I now know the final answer
{final_line}

{rules}"""

CONTINUE_PROMPT = (
    "Continue in the format: a Thought, then either an Action with its Action Input, or `{final_line}`. {rules}"
)
FINISH_PROMPT = (
    "Several function calls failed. Do not call functions any more; give your final answer now as `{final_line}`. "
    "{rules}"
)
FUNCTIONS_CLOSED = "Functions are no longer available. "


def final_answer_format(answer_format: AnswerFormat) -> tuple[str, str]:
    """The line a ReAct rollout ends with, and the rules its answer follows."""
    if answer_format == "boxed":
        return "FINAL ANSWER: \\boxed{<answer>}", "Put the answer, in simplest form, inside \\boxed{}."
    return "FINAL ANSWER: <answer>", FINAL_ANSWER_RULES


def stated_prediction(answer: str, answer_format: AnswerFormat) -> str:
    """The model's final answer in the form the task's scorer reads (see the module docstring)."""
    if answer_format == "boxed":
        return answer if has_final_answer(answer, "boxed") else f"\\boxed{{{answer}}}"
    return f"FINAL ANSWER: {answer}"


def observation(action: Action, result: str) -> str:
    label = f"Observation {action.number}" if action.number is not None else "Observation"
    return f"{label}: {result}"


@agents.register("react")
class ReactAgent(SandboxAgent):
    def __init__(
        self, client: LLMClient, config: AgentConfig, sandbox: CodeSandbox, answer_format: AnswerFormat
    ) -> None:
        super().__init__(client, config, sandbox, answer_format)
        self.final_line, self.rules = final_answer_format(answer_format)
        self.continue_prompt = CONTINUE_PROMPT.format(final_line=self.final_line, rules=self.rules)
        self.finish_prompt = FINISH_PROMPT.format(final_line=self.final_line, rules=self.rules)

    def system_prompt(self, functions: FunctionSet) -> str:
        tools = "\n\n".join(tool.to_text() for tool in (PYTHON_TOOL, *functions))
        return SYSTEM_PROMPT.format(tools=tools, final_line=self.final_line, rules=self.rules)

    async def converse(self, rollout: Rollout, functions: FunctionSet, session: CodeSession) -> None:
        messages, told_to_finish = rollout.messages, False
        for rollout.turns in range(1, self.config.max_turns + 1):
            reply = await self.ask(messages, stop=STOP_SEQUENCES)
            step = parse_reply(reply.message.get("content") or "")
            messages.append({"role": "assistant", "content": step.text})
            if step.final_answer is not None:
                rollout.stop_reason = "answered"
                return
            if step.action is None:
                problem = f"Observation: Error: {step.problem}. " if step.problem else ""
                messages.append({"role": "user", "content": problem + self.continue_prompt})
                continue
            result = await self._act(rollout, step.action, functions, session, functions_open=not told_to_finish)
            if rollout.failed_calls >= self.config.max_failed_calls and not told_to_finish:
                told_to_finish = True
                result += "\n\n" + self.finish_prompt
            messages.append({"role": "user", "content": observation(step.action, result)})

    async def _act(
        self, rollout: Rollout, action: Action, functions: FunctionSet, session: CodeSession, functions_open: bool
    ) -> str:
        """Run one action and return the observation text; nothing the model writes raises here."""
        tool = _resolve_tool(action.tool, functions)
        if tool is PYTHON_TOOL:
            try:
                arguments = parse_arguments(action.input, PYTHON_TOOL.parameters)
            except ValueError as exc:
                return f"Error: {exc}"
            return await run_code(rollout, session, str(arguments["code"]))
        if tool is None:
            tools = ", ".join([PYTHON_TOOL.name, *functions.names])
            return reject_call(rollout, action.tool, f"there is no tool named {action.tool!r}; the tools are: {tools}")
        if not functions_open:
            return FUNCTIONS_CLOSED + self.finish_prompt
        try:
            arguments = parse_arguments(action.input, tool.parameters)
        except ValueError as exc:
            return reject_call(rollout, tool.name, str(exc))
        return await call_function(rollout, session, tool.name, arguments)

    def prediction(self, messages: list[dict[str, Any]]) -> str | None:
        """The last stated final answer, in the scorer's form; else the last assistant text at all."""
        texts = [m["content"] for m in messages if m.get("role") == "assistant" and m.get("content")]
        for text in reversed(texts):
            if (answer := parse_reply(text).final_answer) is not None:
                return stated_prediction(answer, self.answer_format)
        return texts[-1] if texts else None


def _resolve_tool(written: str, functions: FunctionSet) -> Function | None:
    """The tool the model named: exactly, else ignoring case when that is unambiguous (`Python`)."""
    tools = {tool.name: tool for tool in (PYTHON_TOOL, *functions)}
    if written in tools:
        return tools[written]
    folded = [tool for name, tool in tools.items() if name.lower() == written.lower()]
    return folded[0] if len(folded) == 1 else None
