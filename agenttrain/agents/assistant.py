"""The paper's "GPT-4+ agent": function calling plus a MathChat-style Python code interpreter."""

from __future__ import annotations

import re
from typing import Any

from agenttrain.agents.base import (
    Rollout,
    SandboxAgent,
    answer_instruction,
    call_arguments,
    call_function,
    has_final_answer,
    reject_call,
    run_code,
)
from agenttrain.config import AgentConfig
from agenttrain.endpoint.client import LLMClient
from agenttrain.functions import FunctionSet
from agenttrain.registry import agents
from agenttrain.sandbox import CodeSandbox, CodeSession
from agenttrain.tasks.base import AnswerFormat

CODE_BLOCK = re.compile(r"```(?:python|py)[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)

SYSTEM_PROMPT = """You are a helpful assistant that solves problems step by step, using Python and the functions \
you are given.

- To run code, write it in one ```python block; it runs in a persistent interpreter (variables stay \
defined between blocks) and you receive what it prints. Use print() to see results.
- Prefer exact arithmetic (fractions, radicals, sympy) over floating point.
- Call the provided functions when they fit the problem. Do not mix code blocks and function calls in one reply.
- When you are done, give the final answer and no code. {answer_instruction}"""

CONTINUE_PROMPT = "Continue. If you have the answer, state it now. {answer_instruction}"
FINISH_PROMPT = (
    "Several function calls failed. Do not call functions any more; give your final answer now. {answer_instruction}"
)


def extract_code_blocks(text: str) -> list[str]:
    return [block.strip("\n") for block in CODE_BLOCK.findall(text or "")]


@agents.register("assistant")
class AssistantAgent(SandboxAgent):
    def __init__(
        self, client: LLMClient, config: AgentConfig, sandbox: CodeSandbox, answer_format: AnswerFormat
    ) -> None:
        super().__init__(client, config, sandbox, answer_format)
        self.instruction = answer_instruction(answer_format)

    def system_prompt(self, functions: FunctionSet) -> str:
        return SYSTEM_PROMPT.format(answer_instruction=self.instruction)

    async def converse(self, rollout: Rollout, functions: FunctionSet, session: CodeSession) -> None:
        messages, told_to_finish = rollout.messages, False
        for rollout.turns in range(1, self.config.max_turns + 1):
            offer_tools = functions and not told_to_finish
            reply = await self.ask(messages, tools=functions.to_openai_tools() if offer_tools else None)
            messages.append(reply.message)
            if reply.message.get("tool_calls"):
                await self._call_functions(rollout, reply.message["tool_calls"], functions, session)
                if rollout.failed_calls >= self.config.max_failed_calls and not told_to_finish:
                    told_to_finish = True
                    finish = FINISH_PROMPT.format(answer_instruction=self.instruction)
                    messages.append({"role": "user", "content": finish})
                continue
            content = reply.message.get("content") or ""
            if blocks := extract_code_blocks(content):
                messages.append({"role": "user", "content": await self._run_code(rollout, blocks, session)})
                continue
            if has_final_answer(content, self.answer_format):
                rollout.stop_reason = "answered"
                return
            if "TERMINATE" in content:
                rollout.stop_reason = "terminate"
                return
            messages.append({"role": "user", "content": CONTINUE_PROMPT.format(answer_instruction=self.instruction)})

    async def _call_functions(
        self, rollout: Rollout, tool_calls: list[dict[str, Any]], functions: FunctionSet, session: CodeSession
    ) -> None:
        for call in tool_calls:
            name = call["function"]["name"]
            try:
                arguments = call_arguments(call)
                if name not in functions:
                    raise ValueError(f"there is no function named {name!r}; available: {functions.names}")
            except ValueError as exc:
                content = reject_call(rollout, name, str(exc))
            else:
                content = await call_function(rollout, session, name, arguments)
            rollout.messages.append({"role": "tool", "tool_call_id": call["id"], "name": name, "content": content})

    async def _run_code(self, rollout: Rollout, blocks: list[str], session: CodeSession) -> str:
        outputs = [await run_code(rollout, session, block) for block in blocks]
        return "\n\n".join(outputs)

    def prediction(self, messages: list[dict[str, Any]]) -> str | None:
        """The last assistant text that states an answer; else the last assistant text at all."""
        texts = [m.get("content") or "" for m in messages if m.get("role") == "assistant" and m.get("content")]
        answered = [t for t in texts if has_final_answer(t, self.answer_format)]
        return (answered or texts or [None])[-1]
