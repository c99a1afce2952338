"""Learned functions as MCP tools: their listing, and each call run in a fresh sandbox session.

A session per call, as a rollout had one per task: every call starts from the functions as trained, sealed and
limited exactly as in training (`sandbox.timeout_s`, memory, processes, disk, output cap, no network unless the
run allowed it), and nothing one client's call leaves behind is seen by the next.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import mcp_types as types

from agenttrain.functions import FunctionSet
from agenttrain.sandbox import STATE_LOST, CodeSandbox, ExecResult, Sandbox, SandboxError
from agenttrain.serving.source import Served

# Calls run at once; more wait their turn, so that clients cannot make the server start sessions without bound.
MAX_CONCURRENT_CALLS = 4


class FunctionTools:
    """What the MCP server asks of the functions: the tool list and a call's result."""

    def __init__(self, functions: FunctionSet, sandbox: CodeSandbox) -> None:
        self.functions = functions
        self.sandbox = sandbox
        self.slots = asyncio.Semaphore(MAX_CONCURRENT_CALLS)

    @classmethod
    @asynccontextmanager
    async def open(cls, served: Served) -> AsyncIterator[FunctionTools]:
        """Start the sandbox (refused, as in training, where it cannot be sealed) and check the functions'
        packages are importable in it; closed, with every worker, on exit."""
        sandbox = Sandbox(served.sandbox)
        try:
            await sandbox.start()
            packages = sorted({p for f in served.functions for p in f.packages})
            if missing := await sandbox.missing_packages(packages):
                raise SandboxError(sandbox.refusal(missing))
            yield cls(served.functions, sandbox)
        finally:
            await sandbox.close()

    def list(self) -> list[types.Tool]:
        return [types.Tool(name=f.name, description=f.description, input_schema=f.parameters)
                for f in self.functions]

    async def call(self, name: str, arguments: dict[str, Any] | None) -> types.CallToolResult:
        """The text the agent saw in training (output, returned value, error); an error result where the function
        raised or hit a limit, so that the client's model sees why."""
        if name not in self.functions:
            return error_result(f"there is no tool named {name!r}; the tools are: {', '.join(self.functions.names)}")
        async with self.slots, self.sandbox.session(self.functions) as session:
            result = await session.call_function(name, arguments or {})
        return types.CallToolResult(content=[types.TextContent(text=tool_text(result))], is_error=not result.ok)


def tool_text(result: ExecResult) -> str:
    """The text the agent saw in training, less the note that its session restarted: each call here has its own."""
    return (replace(result, output="") if result.output == STATE_LOST else result).as_observation()


def error_result(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=f"Error: {message}")], is_error=True)
