"""The local executor: rollouts as concurrent tasks of this process."""

from __future__ import annotations

from collections.abc import Sequence

from agenttrain.agents.base import Agent
from agenttrain.functions import FunctionSet
from agenttrain.rundir.records import RolloutRecord
from agenttrain.tasks.base import Example
from agenttrain.training.executors.base import RecordCallback
from agenttrain.training.rollouts import run_rollouts


class LocalRollouts:
    """At most `concurrency` rollouts at once, with this process's agent, sandbox pool and LLM client."""

    def __init__(self, agent: Agent, scorer: str, concurrency: int) -> None:
        self.agent = agent
        self.scorer = scorer
        self.concurrency = concurrency

    async def run(
        self,
        examples: Sequence[Example],
        functions: FunctionSet,
        on_record: RecordCallback | None = None,
        done: dict[str, RolloutRecord] | None = None,
    ) -> list[RolloutRecord]:
        return await run_rollouts(self.agent, self.scorer, examples, functions, self.concurrency, on_record, done)
