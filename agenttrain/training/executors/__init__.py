"""Where an epoch's rollouts run. The trainer and `eval` call one `RolloutExecutor`: `local` (local.py) runs the
rollouts concurrently in this process, `ray` (ray_rollouts.py) on Ray worker processes. Each is imported only
when a run uses it, so that the CLI's start-up pays for neither, and nothing but a Ray run imports Ray."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from agenttrain.config import ConfigError, Experiment, LLMConfig

if TYPE_CHECKING:
    from agenttrain.agents.base import Agent
    from agenttrain.endpoint.usage import UsageMeter
    from agenttrain.tasks.base import Task
    from agenttrain.training.executors.base import RolloutExecutor

def check_executor(experiment: Experiment, source: str) -> None:
    """Refuse `executor.kind: ray` before a run starts when Ray is not installed."""
    if experiment.executor.kind == "ray" and importlib.util.find_spec("ray") is None:
        raise ConfigError(f"{source}: executor.kind: ray needs Ray; install it with pip install 'agenttrain[ray]' "
                          "(or set executor.kind: local)")


@asynccontextmanager
async def open_executor(
    experiment: Experiment, task: Task, agent: Agent, endpoint: LLMConfig, meter: UsageMeter, use_cache: bool
) -> AsyncIterator[RolloutExecutor]:
    """The executor `experiment.executor.kind` names. `agent` is this process's, which `local` runs; `endpoint`
    is the agent's endpoint as this process resolved it (the embedded local server's address, say)."""
    if experiment.executor.kind == "local":
        from agenttrain.scorers.runner import warm_judges
        from agenttrain.training.executors.local import LocalRollouts

        warm_judges(task.scorer, endpoint.concurrency)  # they start while the first rollouts wait for the endpoint
        yield LocalRollouts(agent, task.scorer, endpoint.concurrency)
        return
    from agenttrain.training.executors.ray_rollouts import open_ray_executor

    async with open_ray_executor(experiment, task, endpoint, meter, use_cache) as executor:
        yield executor
