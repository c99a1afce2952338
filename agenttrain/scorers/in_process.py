"""A scorer that is a plain Python function of this process, such as one defined in a notebook cell.

Registered scorers are judged in worker processes (runner.py), which import them by name: a function defined in a
notebook or a script's `__main__` cannot be imported there, and the objects it closes over (a loaded model, a
lookup table) are not there either. Pickling it by value would lose the second and fails for many closures. So it
runs here, in a thread of its own, under the same time limit: past it the item is judged wrong with a note, and the
thread, which Python cannot stop, is left to finish in the background. That is safe because the function is the
user's own code, not the model's, and it is given the answer's text, not run on it. An exception it raises, or a
value that is not True or False, is a wrong verdict with a note that says so, never a crashed run.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import Callable, Mapping
from typing import Any

from agenttrain.registry import scorers
from agenttrain.scorers.basic import extract_answer
from agenttrain.scorers.verdict import Verdict

PREFIX = "python:"  # the names of scorers given as functions; a config that names one needs the same process
UserScorer = Callable[..., Any]  # (answer, gold) or (answer, gold, example) -> bool or Verdict


def register_scorer(function: UserScorer, name: str | None = None) -> str:
    """Make `function(answer, gold)` (or `(answer, gold, example)`, `example` being the task's other fields) a
    scorer of this process; returns its name, `python:<name>` (default: the function's own name)."""
    if not callable(function):
        raise TypeError(f"a scorer must be a function, not {type(function).__name__}")
    full = PREFIX + (name or str(getattr(function, "__name__", "scorer")))
    scorers.register_here(full, _judge_with(function))
    return full


def runs_in_process(scorer: str) -> bool:
    return bool(getattr(scorers.get(scorer), "in_process", False))


def _judge_with(function: UserScorer) -> Callable[[str | None, str, Mapping[str, Any]], Verdict]:
    takes_example = _positional_count(function) >= 3

    def judge(prediction: str | None, answer: str, fields: Mapping[str, Any]) -> Verdict:
        extracted = extract_answer(prediction)
        if extracted is None:
            return Verdict(correct=False, extracted=None)
        try:
            result = function(extracted, answer, dict(fields)) if takes_example else function(extracted, answer)
        except Exception as exc:  # the user's function failed on this item: a wrong verdict that says why
            return Verdict(correct=False, extracted=extracted, note=f"the scorer raised {type(exc).__name__}: {exc}")
        if isinstance(result, Verdict):
            return result
        if type(result).__name__ not in ("bool", "bool_"):  # numpy's bool too; a 0.7 is not a verdict
            return Verdict(correct=False, extracted=extracted, note=f"the scorer returned {result!r}, not True or "
                                                                    "False: counted as wrong")
        return Verdict(correct=bool(result), extracted=extracted)

    judge.in_process = True  # type: ignore[attr-defined]
    return judge


def _positional_count(function: UserScorer) -> int:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: called with (answer, gold)
        return 2
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return 3
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters)


async def judge_in_thread(scorer: str, prediction: str | None, answer: str, fields: Mapping[str, Any],
                          timeout_s: float) -> Verdict:
    """The verdict of the in-process scorer `scorer`, from a thread of its own within `timeout_s`."""
    judge = scorers.get(scorer)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Verdict] = loop.create_future()

    def deliver(verdict: Verdict) -> None:
        if not done.done():  # not after the time limit gave up on it
            done.set_result(verdict)

    def run() -> None:
        verdict = judge(prediction, answer, fields)
        with contextlib.suppress(RuntimeError):  # the run ended while a timed-out scorer still ran: nobody waits
            loop.call_soon_threadsafe(deliver, verdict)

    # a daemon thread: one the time limit gave up on never holds up the end of the process
    threading.Thread(target=run, name=f"agenttrain-{scorer}", daemon=True).start()
    try:
        return await asyncio.wait_for(asyncio.shield(done), timeout_s)
    except (TimeoutError, asyncio.TimeoutError):
        return Verdict(correct=False, extracted=None, note=f"scorer timed out after {timeout_s:g}s")
