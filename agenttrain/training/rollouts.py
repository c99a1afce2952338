"""The forward pass: run the agent on examples concurrently, score each rollout, summarise accuracy."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from agenttrain.agents.base import Agent
from agenttrain.endpoint.outage import OutageTimer
from agenttrain.functions import FunctionSet
from agenttrain.gather import run_all
from agenttrain.rundir.records import Rollout, RolloutRecord
from agenttrain.scorers import judge_async
from agenttrain.scorers.judging import wants_rollout
from agenttrain.tasks.base import Example

if TYPE_CHECKING:
    from agenttrain.scorers.verdict import Verdict
    from agenttrain.training.executors.base import RecordCallback, RolloutExecutor

Done = dict[str, RolloutRecord]  # rollouts journaled before a crash, by example id: not run again


def scored(example: Example, rollout: Rollout, verdict: Verdict) -> RolloutRecord:
    """One line of rollouts.jsonl: everything needed to inspect, score again, or resume."""
    return RolloutRecord(**dict(rollout), question=example.question, gold=example.answer,
                         extracted=verdict.extracted, correct=verdict.correct, strict=verdict.strict,
                         score_note=verdict.note)


async def solve_and_score(agent: Agent, scorer: str, example: Example, functions: FunctionSet) -> RolloutRecord:
    """One rollout, scored: what every executor runs per example, here or on a Ray worker."""
    return await score(scorer, example, await agent.solve(example, functions))


async def score(scorer: str, example: Example, rollout: Rollout) -> RolloutRecord:
    whole = rollout.model_dump(mode="json") if wants_rollout(scorer) else None
    verdict = await judge_async(scorer, rollout.prediction, example.answer, example.fields, rollout=whole)
    return scored(example, rollout, verdict)


async def run_rollouts(
    agent: Agent,
    scorer: str,
    examples: Sequence[Example],
    functions: FunctionSet,
    concurrency: int,
    on_record: RecordCallback | None = None,
    done: Done | None = None,
) -> list[RolloutRecord]:
    """Records in the order of `examples`, at most `concurrency` conversations at once; ids in `done` are not
    run again."""
    limit = asyncio.Semaphore(concurrency)
    done = done or {}

    async def one(example: Example) -> RolloutRecord:
        if example.id in done:
            return done[example.id]
        async with limit:  # scoring waits for a scorer process, not the endpoint: it does not hold a slot
            rollout = await agent.solve(example, functions)
        record = await score(scorer, example, rollout)
        if on_record:
            on_record(record)
        return record

    return await run_all(one(e) for e in examples)


async def answered_rollouts(
    executor: RolloutExecutor,
    examples: Sequence[Example],
    functions: FunctionSet,
    outage: OutageTimer,
    on_record: RecordCallback | None = None,
    done: Done | None = None,
) -> list[RolloutRecord]:
    """The executor's rollouts (here, or on Ray workers), with those that failed on the endpoint run again after a
    wait until every example has an answer; raises EndpointDown when the endpoint stays down past `outage`'s
    limit."""
    done = dict(done or {})
    while True:
        records = await executor.run(examples, functions, on_record, done)
        failed = [r for r in records if r.endpoint_failed]
        answered = {r.id: r for r in records if not r.endpoint_failed}
        if not failed:
            return records
        if len(answered) > len(done):
            outage.progressed()
        done = answered
        await outage.wait(f"{len(failed)} of {len(records)} rollouts", str(failed[0].error))
