"""The forward pass: run the agent on examples concurrently, score each rollout, summarise accuracy."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from agenttrain.agents.base import Agent
from agenttrain.endpoint.outage import OutageTimer
from agenttrain.functions import FunctionSet
from agenttrain.rundir.records import RolloutRecord
from agenttrain.scorers import judge_async
from agenttrain.tasks.base import Example

if TYPE_CHECKING:
    from agenttrain.training.executors.base import RecordCallback, RolloutExecutor

T = TypeVar("T")


async def run_all(coroutines: Iterable[Awaitable[T]]) -> list[T]:
    """Like gather, but the first exception cancels the rest instead of leaving them running."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def rollout_record(example: Example, rollout: Any, verdict: Any) -> dict[str, Any]:
    """One line of rollouts.jsonl: everything needed to inspect, score again, or resume."""
    data = rollout.to_dict()
    data.pop("example_id")
    record = RolloutRecord(id=example.id, question=example.question, gold=example.answer,
                           extracted=verdict.extracted, correct=verdict.correct, strict=verdict.strict,
                           score_note=verdict.note, **data)
    return record.to_json()


async def solve_and_score(agent: Agent, scorer: str, example: Example, functions: FunctionSet) -> dict[str, Any]:
    """One rollout, scored: what every executor runs per example, here or on a Ray worker."""
    return await score(scorer, example, await agent.solve(example, functions))


async def score(scorer: str, example: Example, rollout: Any) -> dict[str, Any]:
    verdict = await judge_async(scorer, rollout.prediction, example.answer, example.fields)
    return rollout_record(example, rollout, verdict)


async def evaluate(
    agent: Agent,
    scorer: str,
    examples: Sequence[Example],
    functions: FunctionSet,
    concurrency: int,
    on_record: RecordCallback | None = None,
    done: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Records in the order of `examples`; ids in `done` (journaled before a crash) are not run again."""
    limit = asyncio.Semaphore(concurrency)
    done = done or {}

    async def one(example: Example) -> dict[str, Any]:
        if example.id in done:
            return done[example.id]
        async with limit:  # scoring waits for a scorer process, not the endpoint: it does not hold a slot
            rollout = await agent.solve(example, functions)
        record = await score(scorer, example, rollout)
        if on_record:
            on_record(record)
        return record

    return await run_all(one(e) for e in examples)


def endpoint_failed(record: dict[str, Any]) -> bool:
    """A rollout cut short by the endpoint is not an answer: it must not count as a wrong one."""
    return record.get("stop_reason") == "llm_error"


async def evaluate_answered(
    executor: RolloutExecutor,
    examples: Sequence[Example],
    functions: FunctionSet,
    outage: OutageTimer,
    on_record: RecordCallback | None = None,
    done: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The executor's rollouts (here, or on Ray workers), with those that failed on the endpoint run again after a
    wait until every example has an answer; raises EndpointDown when the endpoint stays down past `outage`'s
    limit."""
    done = dict(done or {})
    while True:
        records = await executor.run(examples, functions, on_record, done)
        failed = [r for r in records if endpoint_failed(r)]
        answered = {r["id"]: r for r in records if not endpoint_failed(r)}
        if not failed:
            return records
        if len(answered) > len(done):
            outage.progressed()
        done = answered
        await outage.wait(f"{len(failed)} of {len(records)} rollouts", str(failed[0].get("error")))


def summarise(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    n = len(records)
    correct = sum(bool(r["correct"]) for r in records)
    summary: dict[str, Any] = {"accuracy": correct / n if n else 0.0, "correct": correct, "n": n}
    if n and all(r.get("strict") is not None for r in records):
        summary["accuracy_strict"] = sum(bool(r["strict"]) for r in records) / n
    summary["errors"] = sum(1 for r in records if r.get("error"))
    return summary
