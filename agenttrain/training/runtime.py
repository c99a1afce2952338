"""Everything a train or eval run needs, built from the config and closed together."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from agenttrain.agents.base import Agent
from agenttrain.config import ConfigError, Experiment, LLMConfig
from agenttrain.endpoint.cache import open_cache
from agenttrain.endpoint.client import LLMClient
from agenttrain.endpoint.local_model import LOCAL, local_server
from agenttrain.endpoint.usage import UsageMeter
from agenttrain.sandbox import Sandbox
from agenttrain.tasks import load_task
from agenttrain.tasks.base import Task
from agenttrain.training.agent_setup import cache_endpoint, open_agent
from agenttrain.training.executors import open_executor
from agenttrain.training.executors.base import RolloutExecutor


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
async def role_endpoints(experiment: Experiment, log_dir: Path) -> AsyncIterator[dict[str, LLMConfig]]:
    """Each role's endpoint settings; roles at `local` get the embedded server, started once for both and
    stopped when the block ends."""
    settings = {role: experiment.llm_for(role) for role in ("agent", "optimizer")}
    if not any(llm.resolved_base_url() == LOCAL for llm in settings.values()):
        yield settings
        return
    local = experiment.llm.local
    async with local_server(local, log_dir / "local-server.log") as url:
        # more requests in flight than server slots would only queue there and eat into timeout_s
        yield {
            role: llm.model_copy(update={"base_url": url, "concurrency": min(llm.concurrency, local.parallel)})
            if llm.resolved_base_url() == LOCAL else llm
            for role, llm in settings.items()
        }


@asynccontextmanager
async def open_runtime(
    experiment: Experiment, log_dir: Path, use_cache: bool = True, sandbox: Sandbox | None = None
) -> AsyncIterator[Runtime]:
    """`log_dir` (the run directory) receives the local model server's log, when one is started. `sandbox`: one
    the caller launched early (launch.launched_early), closed with the agent (agent_setup.open_agent)."""
    task = load_task(experiment.task)
    check_network(experiment, task)
    async with role_endpoints(experiment, log_dir) as settings, \
            _open_clients(experiment, task, settings, use_cache, sandbox) as runtime:
        yield runtime


@asynccontextmanager
async def _open_clients(
    experiment: Experiment, task: Task, settings: dict[str, LLMConfig], use_cache: bool, sandbox: Sandbox | None
) -> AsyncIterator[Runtime]:
    meter = UsageMeter(experiment.budget, experiment.prices())
    cache = open_cache(experiment.llm, enabled=use_cache)
    agent_client = LLMClient(settings["agent"], role="agent", meter=meter, cache=cache,
                             cache_endpoint=cache_endpoint(experiment, "agent"))
    optimizer_client = LLMClient(settings["optimizer"], role="optimizer", meter=meter, cache=cache,
                                 cache_endpoint=cache_endpoint(experiment, "optimizer"), share_with=agent_client)
    try:
        async with open_agent(experiment, agent_client, task.answer_format, sandbox) as (agent, sandbox), \
                open_executor(experiment, task, agent, settings["agent"], meter, use_cache) as executor:
            yield Runtime(experiment, task, meter, agent_client, optimizer_client, sandbox, agent, executor)
    finally:
        await agent_client.close()
        await optimizer_client.close()
        if cache is not None:
            cache.close()
