"""What the rest of agenttrain asks of a sandbox (agents, optimizer, runtime), whatever runs the code.

`CodeSandbox` and `CodeSession` are the whole surface; the process backend (process.py) implements them,
and tests/test_sandbox.py tests the process backend through this interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agenttrain.errors import UserError
from agenttrain.functions import FunctionSet

STATE_LOST = "[the Python session was restarted: variables, imports and definitions from earlier code are gone]"


class SandboxError(UserError):
    """The sandbox itself could not run (not an error in the code it was given)."""


@dataclass(frozen=True)
class ExecResult:
    ok: bool  # ran to completion without an exception or a limit being hit
    output: str  # captured stdout+stderr, truncated with a visible marker past max_output_chars
    error: str | None  # short reason when not ok; the traceback, if any, is in `output`
    value: str | None = None  # call_function: str() of the return value; None for code blocks
    duration_s: float = 0.0

    def as_observation(self) -> str:
        """The text a model sees: output, value and error, without empty parts."""
        parts = [self.output.rstrip("\n")]
        if self.value is not None:
            parts.append(self.value)
        if self.error is not None and self.error not in self.output:
            parts.append(f"Error: {self.error}")
        return "\n".join(p for p in parts if p) or "(no output)"


class CodeSession(Protocol):
    """The code-execution state of one rollout: like a notebook, state persists across calls."""

    workdir: Path  # where the session's files are on the trainer's side

    async def run_code(self, code: str) -> ExecResult: ...

    async def call_function(self, name: str, arguments: dict[str, Any]) -> ExecResult: ...


class CodeSandbox(Protocol):
    async def start(self) -> None:
        """Get ready to open sessions; raises SandboxError where the sandbox cannot run as configured."""

    async def close(self) -> None: ...

    def session(self, functions: FunctionSet, files: Sequence[Path] = ()) -> AbstractAsyncContextManager[CodeSession]:
        """A session with `functions` loaded and copies of `files` in its working folder."""

    async def missing_packages(self, packages: Sequence[str]) -> list[str]: ...

    def refusal(self, missing: Sequence[str]) -> str:
        """Why functions needing `missing` packages cannot be used, and what can be used instead."""

    def describe(self) -> dict[str, Any]:
        """For run.json: the limits, and what this machine actually enforces."""
