"""Everything a train or eval run needs, built from the config and closed together."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from agenttrain.agents import make_agent
from agenttrain.agents.base import Agent
from agenttrain.cache import open_cache
from agenttrain.config import ConfigError, Experiment
from agenttrain.executors import RolloutExecutor, open_executor
from agenttrain.llm import LLMClient
from agenttrain.sandbox import Sandbox
from agenttrain.tasks import load_task
from agenttrain.tasks.base import AnswerFormat, Task
from agenttrain.usage import UsageMeter


@dataclass
class Runtime:
    experiment: Experiment
    task: Task
    meter: UsageMeter
    agent_client: LLMClient
    optimizer_client: LLMClient
    sandbox: Sandbox
    agent: Agent
    executor: RolloutExecutor  # runs an epoch's rollouts: with `agent` here, or on Ray workers


def check_network(experiment: Experiment, task: Task) -> None:
    if getattr(task, "requires_network", False) and not experiment.sandbox.network:
        raise ConfigError(
            f"task {task.name!r} needs network access from the sandbox (web search, downloads); "
            "set `sandbox.network: true` to allow it"
        )


@asynccontextmanager
async def open_agent(
    experiment: Experiment, client: LLMClient, answer_format: AnswerFormat
) -> AsyncIterator[tuple[Agent, Sandbox]]:
    """The configured agent with a started sandbox pool of its own; here, or in a Ray worker process."""
    sandbox = Sandbox(experiment.sandbox)
    try:
        await sandbox.start()
        yield make_agent(experiment.agent, client, sandbox, answer_format), sandbox
    finally:
        await sandbox.close()


@asynccontextmanager
async def open_runtime(experiment: Experiment, use_cache: bool = True) -> AsyncIterator[Runtime]:
    task = load_task(experiment.task)
    check_network(experiment, task)
    meter = UsageMeter(experiment.budget, experiment.llm.prices)
    cache = open_cache(experiment.llm, enabled=use_cache)
    agent_client = LLMClient(experiment.llm_for("agent"), role="agent", meter=meter, cache=cache)
    optimizer_client = LLMClient(experiment.llm_for("optimizer"), role="optimizer", meter=meter, cache=cache)
    try:
        async with open_agent(experiment, agent_client, task.answer_format) as (agent, sandbox), \
                open_executor(experiment, task, agent, meter, use_cache) as executor:
            yield Runtime(experiment, task, meter, agent_client, optimizer_client, sandbox, agent, executor)
    finally:
        await agent_client.close()
        await optimizer_client.close()
        if cache is not None:
            cache.close()
