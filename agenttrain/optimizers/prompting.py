"""What every optimizer method's prompt is made of, and fitting it into the model's window.

The pieces follow the paper (App. D.1): the rules, a worked example function, the current function list, the
lists that were tried and rolled back, a 1/0 table per training task, and the conversations marked SOLVED or
FAILED. `PromptWindow` is the one piece that sizes a request: `optimizer.max_prompt_tokens`, no more than the
server's context window less the reply's room, and a request the server still finds too long is built again
shorter until it fits or nothing is left to cut. Each prompt says what it left out (`Prompt.cuts`).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agenttrain.agents.base import transcript
from agenttrain.config import OptimizerConfig
from agenttrain.endpoint.client import ContextOverflow, LLMClient
from agenttrain.endpoint.context_window import server_context_size
from agenttrain.functions import FunctionSet
from agenttrain.rundir.records import RolloutRecord

CHARS_PER_TOKEN = 4  # a coarse, tokenizer-free estimate; the window corrects it when the server disagrees
MIN_HISTORY_CHARS = 300  # a conversation shorter than this shows neither the task nor how it ended
FAIR_HISTORY_CHARS = 1500  # what each conversation gets before some are left out
MAX_SHRINKS = 4
SHRINK_MARGIN = 0.9  # after an overflow, aim this far under what the server said fits

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

FUNCTION_FIELDS = {
    "name": "The function's name, a Python identifier.",
    "description": "What the function does, for the assistant that will call it.",
    "arguments": 'JSON object mapping each parameter name to its JSON schema, e.g. {"x": {"type": "number"}}.',
    "packages": "The pip packages the code imports, space-separated; empty string if none.",
    "code": "The complete Python source, starting with `def <name>(`.",
}


@dataclass
class Prompt:
    """A user message and what was left out of it to fit."""

    text: str
    cuts: list[str] = field(default_factory=list)


PromptBuilder = Callable[[int], Prompt]  # chars available -> the prompt


def estimate_tokens(value: Any) -> int:
    return len(value if isinstance(value, str) else json.dumps(value)) // CHARS_PER_TOKEN


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


def render_histories(records: Sequence[RolloutRecord], char_budget: int) -> Prompt:
    """Failed tasks first (they teach the most), each shortened so that several fit; the rest are counted."""
    ordered = sorted(records, key=lambda r: r.correct)
    # a fair share each while the budget allows; below that fewer conversations, but each still readable
    per_history = max(char_budget // max(len(ordered), 1), min(FAIR_HISTORY_CHARS, char_budget))
    parts: list[str] = []
    used, omitted, shortened = 0, 0, 0
    for record in ordered:
        verdict = "SOLVED" if record.correct else "FAILED"
        text = transcript(record.messages)
        header = f"### Task {record.id} ({verdict})\n"
        block = header + _shorten(text, max(per_history - len(header), 0))
        if used + len(block) > char_budget or per_history < MIN_HISTORY_CHARS:
            omitted += 1
            continue
        shortened += len(text) > per_history
        parts.append(block)
        used += len(block)
    cuts = []
    if omitted:
        parts.append(f"({omitted} more conversations omitted to fit the prompt budget)")
        cuts.append(f"{omitted} of {len(ordered)} conversations left out")
    if shortened:
        cuts.append(f"{shortened} conversations shortened to about {per_history} characters")
    return Prompt("\n\n".join(parts), cuts)


def render_rejected(rejected: Sequence[tuple[FunctionSet, float]], char_budget: int) -> Prompt:
    """The rolled-back lists, worst first, in full while they fit in `char_budget`; else by name and score."""
    ordered = sorted(rejected, key=lambda item: item[1])
    full = "\n\n".join(f"Rejected set (training success rate {score:.2f}):\n{render_functions(fs)}"
                       for fs, score in ordered)
    if len(full) <= char_budget:
        return Prompt(full or "(none)")
    brief = "\n".join(f"Rejected set (training success rate {score:.2f}): {', '.join(fs.names) or '(empty)'}"
                      for fs, score in ordered)
    return Prompt(brief, [f"{len(ordered)} rejected lists shown by their function names only"])


def result_table(records: Sequence[RolloutRecord]) -> str:
    return "\n".join(f"{r.id}: {int(r.correct)}" for r in records)


def build_prompt(
    best: FunctionSet,
    best_accuracy: float,
    current: FunctionSet,
    rejected: Sequence[tuple[FunctionSet, float]],
    records: Sequence[RolloutRecord],
    char_budget: int,
    closing: str,
    notes: str = "",
) -> Prompt:
    """The user message of one optimizer call in `char_budget` characters: the conversations are what is cut
    first, then the rejected lists shrink to their names. `notes` (say, what each function did on its tasks)
    goes after the result table."""
    head = (f"## List A: the best function list so far (training success rate {best_accuracy:.2f})\n"
            f"{render_functions(best)}\n\n"
            f"## List B: the list after the actions you have taken in this step\n{render_functions(current)}\n\n"
            "## Function lists that were tried and rolled back because they did not improve, worst first\n")
    tail = (f"\n\n## Result per training task (1 solved, 0 failed)\n{result_table(records)}\n\n"
            + (f"{notes}\n\n" if notes else "") + "## Conversations of the assistant with List A\n")
    closing = f"\n\n{closing}"
    fixed = len(head) + len(tail) + len(closing)
    rejected_part = render_rejected(rejected, max(char_budget - fixed - FAIR_HISTORY_CHARS, 0) // 2)
    histories = render_histories(records, max(char_budget - fixed - len(rejected_part.text), 0))
    return Prompt(head + rejected_part.text + tail + histories.text + closing, rejected_part.cuts + histories.cuts)


def sample_index(epoch: int, position: int, attempt: int, lane: int = 0) -> int:
    """A distinct, reproducible sample number for every optimizer call of a run: the response cache replays a
    rerun exactly, but never answers a later call (another epoch, action, retry or concurrent proposal `lane`)
    with an earlier reply, even when its prompt is the same."""
    return ((lane * 10_000 + epoch) * 100 + position) * 100 + attempt


_SERVER_SIZES = re.compile(r"(\d+)\s*tokens?\)?[^0-9]+?(?:context|maximum)[^0-9]*?(\d+)\s*tokens?", re.I)
_VLLM_SIZES = re.compile(r"maximum context length is (\d+) tokens.*?(\d+) tokens", re.I | re.S)


def overflow_ratio(message: str) -> float | None:
    """What fits over what was sent, when the server's error says both (llama.cpp: "request (4121 tokens)
    exceeds the available context size (4096 tokens)"; vLLM: "maximum context length is 4096 tokens. However,
    you requested 5000 tokens")."""
    if match := _VLLM_SIZES.search(message):
        window, sent = int(match.group(1)), int(match.group(2))
    elif match := _SERVER_SIZES.search(message):
        sent, window = int(match.group(1)), int(match.group(2))
    else:
        return None
    return window / sent if sent > window > 0 else None


class PromptWindow:
    """Sends one optimizer request whose prompt is built to fit: within `max_prompt_tokens`, the server's window
    (where it tells it) less the reply's `max_tokens`, and smaller again each time the server says it did not
    fit. The limit learned from an overflow holds for the rest of the run."""

    def __init__(self, client: LLMClient, config: OptimizerConfig) -> None:
        self.client = client
        self.config = config
        self._limit: int | None = None

    async def limit(self) -> int:
        """Tokens one request may take."""
        if self._limit is None:
            window = await asyncio.to_thread(server_context_size, self.client.settings.resolved_base_url())
            limit = self.config.max_prompt_tokens
            reply_room = self.config.max_tokens or 0
            self._limit = limit if window is None else max(min(limit, window - reply_room), 1)
        return self._limit

    async def ask(
        self, system: str, build: PromptBuilder, tools: list[dict[str, Any]], index: int,
        extra: Sequence[dict[str, Any]] = (),
    ) -> tuple[dict[str, Any], list[str]]:
        """The reply to `system` + the prompt `build` makes + the retry conversation `extra`, and what the prompt
        left out. Raises ContextOverflow when even the shortest prompt does not fit."""
        sent, error = None, ""
        for _ in range(MAX_SHRINKS + 1):
            fixed = estimate_tokens(system) + estimate_tokens(tools) + estimate_tokens(list(extra))
            prompt = build(max(await self.limit() - fixed, 0) * CHARS_PER_TOKEN)
            if prompt.text == sent:
                break  # nothing more to cut
            sent = prompt.text
            messages = [{"role": "system", "content": system}, {"role": "user", "content": prompt.text}, *extra]
            try:
                reply = await self.client.chat(messages, model=self.config.model, params=self.config, tools=tools,
                                               sample_index=index)
            except ContextOverflow as overflow:
                error = str(overflow)
                # below what was sent, by as much as the server says was too much (else by half)
                factor = min((overflow_ratio(error) or 0.5) * SHRINK_MARGIN, 0.9)
                self._limit = max(int(min(await self.limit(), fixed + estimate_tokens(sent)) * factor), 1)
                continue
            return reply.message, prompt.cuts
        raise ContextOverflow(f"the optimizer's prompt does not fit the model's context even when cut to "
                              f"{estimate_tokens(sent or '')} tokens of conversations and lists ({error}); "
                              "raise the server's context size or lower optimizer.max_tokens")
