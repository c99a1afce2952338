"""Executing model-written code and learned functions out of process, with limits.

`interface.py` says what the rest of agenttrain may ask of a sandbox; `process.py` is the backend that does it
with processes on this machine (forkserver.py, worker.py, isolation.py, cgroups.py, channel.py, pool.py,
workdirs.py, packages.py behind it).
"""

from agenttrain.sandbox.interface import STATE_LOST, CodeSandbox, CodeSession, ExecResult, SandboxError
from agenttrain.sandbox.process import Sandbox, SandboxSession

__all__ = ["STATE_LOST", "CodeSandbox", "CodeSession", "ExecResult", "Sandbox", "SandboxError", "SandboxSession"]
