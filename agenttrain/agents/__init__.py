"""Agent systems by `agent.type`, as registered in `agenttrain.registry.agents`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agenttrain.registry import agents

if TYPE_CHECKING:
    from agenttrain.agents.base import Agent
    from agenttrain.config import AgentConfig
    from agenttrain.endpoint.client import LLMClient
    from agenttrain.sandbox import CodeSandbox
    from agenttrain.tasks.base import AnswerFormat


def make_agent(config: AgentConfig, client: LLMClient, sandbox: CodeSandbox, answer_format: AnswerFormat) -> Agent:
    """An agent is built from its config, the endpoint's client, the code sandbox and the task's answer format."""
    agent: Agent = agents.get(config.type)(client, config, sandbox, answer_format)
    return agent
