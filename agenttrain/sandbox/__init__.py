"""Executing model-written code and learned functions out of process, with limits.

`interface.py` says what the rest of agenttrain may ask of a sandbox; `process.py` is the backend that does it
with processes on this machine (forkserver.py, supervisor.py, worker.py, channel.py, replies.py, isolation.py,
cgroups.py, network.py, pool.py, workdirs.py, packages.py behind it). The names below load on first use: the
fork server's template and the workers import only the standard-library modules they need, not the trainer's side
(pydantic, config).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agenttrain.sandbox.interface import STATE_LOST, CodeSandbox, CodeSession, ExecResult, SandboxError
    from agenttrain.sandbox.process import Sandbox, SandboxSession

_MODULE_OF = {
    "STATE_LOST": "interface", "CodeSandbox": "interface", "CodeSession": "interface", "ExecResult": "interface",
    "SandboxError": "interface", "Sandbox": "process", "SandboxSession": "process",
}  # fmt: skip
__all__ = ["STATE_LOST", "CodeSandbox", "CodeSession", "ExecResult", "Sandbox", "SandboxError", "SandboxSession"]


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
