"""What every process that runs rollouts builds, the trainer's and each Ray worker's alike: the configured agent
with a sandbox pool of its own, and the name the response cache gives the agent's endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from agenttrain.agents import make_agent
from agenttrain.agents.base import Agent
from agenttrain.config import Experiment
from agenttrain.endpoint.client import LLMClient
from agenttrain.endpoint.local_model import LOCAL, cache_identity
from agenttrain.sandbox import Sandbox
from agenttrain.tasks.base import AnswerFormat


@asynccontextmanager
async def open_agent(
    experiment: Experiment, client: LLMClient, answer_format: AnswerFormat, sandbox: Sandbox | None = None
) -> AsyncIterator[tuple[Agent, Sandbox]]:
    """The configured agent with a sandbox pool of its own (`sandbox`, or a new one; closed with the agent); here, or
    in a Ray worker process. The sandbox starts in the background, so that its template's imports overlap the
    model's first turn: the first session waits for it (and raises SandboxError where it cannot start)."""
    sandbox = sandbox or Sandbox(experiment.sandbox)
    try:
        sandbox.start_soon()
        yield make_agent(experiment.agent, client, sandbox, answer_format), sandbox
    finally:
        await sandbox.close()


def cache_endpoint(experiment: Experiment, role: Literal["agent", "optimizer"]) -> str | None:
    """What the response cache calls the role's endpoint (None: its URL); the same here and on Ray workers."""
    local = experiment.llm_for(role).resolved_base_url() == LOCAL
    return cache_identity(experiment.llm.local) if local else None
