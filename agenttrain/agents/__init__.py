"""Agent systems by `agent.type`."""

from __future__ import annotations

from agenttrain.agents.assistant import AssistantAgent
from agenttrain.agents.base import Agent
from agenttrain.agents.react import ReactAgent
from agenttrain.config import AgentConfig
from agenttrain.llm import LLMClient
from agenttrain.sandbox import CodeSandbox
from agenttrain.tasks.base import AnswerFormat


def make_agent(config: AgentConfig, client: LLMClient, sandbox: CodeSandbox, answer_format: AnswerFormat) -> Agent:
    if config.type == "assistant":
        return AssistantAgent(client, config, sandbox, answer_format)
    if config.type == "react":
        return ReactAgent(client, config, sandbox, answer_format)
    raise NotImplementedError(f"agent.type {config.type!r}")
