"""Running model-written code and learned functions out of process, with limits.

    sandbox = Sandbox(experiment.sandbox)
    await sandbox.start()
    async with sandbox.session(functions, files=example.files) as session:   # one per rollout
        result = await session.run_code("x = 2\\nprint(x)")
        result = await session.call_function("evaluate_expression", {"expression": "2+2"})

Nothing here executes user code: each session gets a worker process (sandbox_worker.py) from a warm pool,
confined as well as this machine allows (sandbox_isolation.py); `describe()` says what is enforced.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import secrets
import shutil
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agenttrain.config import SandboxConfig
from agenttrain.errors import UserError
from agenttrain.functions import FunctionSet
from agenttrain.sandbox_isolation import Limits
from agenttrain.sandbox_packages import PackageEnvironment, distribution_names, find_missing
from agenttrain.sandbox_pool import (
    WarmPool,
    WorkerDied,
    WorkerFailed,
    WorkerProcess,
    WorkerTimeout,
    worker_environment,
)
from agenttrain.sandbox_workdirs import WorkdirRoot

STATE_LOST = "[the Python session was restarted: variables, imports and definitions from earlier code are gone]"
# Each session runs as its own throwaway uid (when we are root), so RLIMIT_NPROC counts one session's
# processes only and sessions cannot touch each other's files. Far above any real account's uid.
SESSION_UIDS = range(1_500_000_000, 1_600_000_000)


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


class SandboxSession:
    """The code-execution state of one rollout. Calls are serialized; a worker that dies is replaced."""

    def __init__(self, sandbox: Sandbox, setup: dict[str, Any], workdir: Path) -> None:
        self.workdir = workdir
        self._sandbox = sandbox
        self._setup = setup
        self._worker: WorkerProcess | None = None
        self._lock = asyncio.Lock()

    async def run_code(self, code: str) -> ExecResult:
        """Run a code block; state persists across calls in this session, like notebook cells."""
        return await self._request({"op": "run", "code": code})

    async def call_function(self, name: str, arguments: dict[str, Any]) -> ExecResult:
        return await self._request({"op": "call", "name": name, "arguments": arguments})

    async def _request(self, message: dict[str, Any]) -> ExecResult:
        async with self._lock:
            started = time.monotonic()
            try:
                worker = await self._ready_worker()
                reply = await worker.request(message, self._sandbox.settings.timeout_s)
            except (WorkerTimeout, WorkerDied) as exc:
                self._worker = None
                return ExecResult(False, STATE_LOST, str(exc), duration_s=time.monotonic() - started)
            except WorkerFailed as exc:
                self._worker = None
                raise SandboxError(f"the sandbox worker failed (a bug, not the code it ran):\n{exc}") from None
            return ExecResult(
                ok=reply["ok"], output=reply["output"], error=reply["error"], value=reply["value"],
                duration_s=time.monotonic() - started,
            )  # fmt: skip

    async def _ready_worker(self) -> WorkerProcess:
        if self._worker is None:
            worker = await self._sandbox.take_worker()
            try:
                # Loading runs the functions' top-level code; the worker limits each function, this is a backstop.
                timeout = self._sandbox.settings.timeout_s * (1 + len(self._setup["functions"]))
                reply = await worker.request(self._setup, timeout)
            except BaseException:
                await worker.kill()
                raise
            self._sandbox.record_isolation(reply["isolation"])
            self._worker = worker
        return self._worker

    async def stop_worker(self) -> None:
        """Kill the worker; a later call would start a fresh one, without the earlier state."""
        if self._worker is not None:
            await self._worker.kill()
            self._worker = None

    async def close(self) -> None:
        await self.stop_worker()
        await asyncio.to_thread(shutil.rmtree, self.workdir, ignore_errors=True)


class Sandbox:
    def __init__(self, settings: SandboxConfig) -> None:
        self.settings = settings
        self._packages = PackageEnvironment()
        self._python = (
            str(self._packages.python) if settings.install_packages and self._packages.exists else sys.executable
        )
        self._env = worker_environment(self._python, settings.env_allow)
        self._pool = WarmPool(self._spawn, settings.warm_workers)
        self._next_uid = SESSION_UIDS.start + secrets.randbelow(len(SESSION_UIDS))
        self._isolation: dict[str, Any] | None = None
        self._known_packages: dict[str, bool] = {}
        self._sessions: set[SandboxSession] = set()
        self._workdirs = WorkdirRoot()
        self._started = False

    async def start(self) -> None:
        """Warm the pool; idempotent."""
        if not self._started:
            self._started = True
            await self._pool.fill()

    async def close(self) -> None:
        """Kill every worker, idle or in a session, and remove the workdirs; idempotent."""
        self._started = False
        await self._pool.close()
        for session in list(self._sessions):
            await session.stop_worker()
        await asyncio.to_thread(self._workdirs.close)

    def session(
        self, functions: FunctionSet, files: Sequence[Path] = ()
    ) -> AbstractAsyncContextManager[SandboxSession]:
        return self._session(functions, files)

    @contextlib.asynccontextmanager
    async def _session(self, functions: FunctionSet, files: Sequence[Path]) -> AsyncIterator[SandboxSession]:
        uid = self._session_uid()
        workdir = await asyncio.to_thread(self._workdirs.new_workdir, files, uid)
        session = SandboxSession(self, self._setup_request(workdir, uid, functions), workdir)
        self._sessions.add(session)
        try:
            yield session
        finally:
            self._sessions.discard(session)
            await session.close()

    async def take_worker(self) -> WorkerProcess:
        try:
            return await self._pool.take()
        except (WorkerDied, WorkerFailed, OSError) as exc:
            raise SandboxError(f"cannot start a sandbox worker with {self._python}: {exc}") from None

    def record_isolation(self, isolation: dict[str, Any]) -> None:
        self._isolation = isolation

    async def missing_packages(self, packages: Sequence[str]) -> list[str]:
        """The packages the sandbox cannot import; with `install_packages`, they are installed first."""
        unknown = [p for p in packages if p not in self._known_packages]
        if unknown:
            missing = set(await find_missing(self._python, self._env, unknown))
            if missing and self.settings.install_packages:
                await self._install(sorted(missing))
                missing = set(await find_missing(self._python, self._env, sorted(missing)))
            self._known_packages.update({p: p not in missing for p in unknown})
        return [p for p in packages if not self._known_packages[p]]

    def available_packages(self) -> list[str]:
        return distribution_names(self._packages.site_packages() if self._python != sys.executable else ())

    def refusal(self, missing: Sequence[str]) -> str:
        """Why functions needing `missing` packages cannot be used, and what can be used instead."""
        remedy = "" if self.settings.install_packages else " (or set sandbox.install_packages: true)"
        return (
            f"not available in the sandbox: {', '.join(missing)}. "
            f"Use only installed packages{remedy}: {', '.join(self.available_packages())}"
        )

    def describe(self) -> dict[str, Any]:
        """For run.json: the limits, and what this machine actually enforces."""
        isolation = self._isolation or self._probe_isolation()
        return {
            "interpreter": self._python,
            "limits": {**asdict(self._limits()), "timeout_s": self.settings.timeout_s,
                       "max_output_chars": self.settings.max_output_chars},
            "network": self._network_report(isolation),
            "process_limit_enforced": isolation["uid"] is not None,  # see sandbox_isolation.apply_limits
            "filesystem": _filesystem_report(isolation),
            "kills_detached_processes": isolation["pid_namespace"],
            "isolation": isolation,
            "env_allow": list(self.settings.env_allow),
            "warm_workers": self.settings.warm_workers,
        }  # fmt: skip

    def _network_report(self, isolation: dict[str, Any]) -> dict[str, Any]:
        if self.settings.network:
            return {"allowed": True, "enforced": False, "how": "sandbox.network is true"}
        if isolation["network_namespace"]:
            return {"allowed": False, "enforced": True, "how": "private network namespace without interfaces"}
        return {"allowed": False, "enforced": False, "how": "not enforced: " + "; ".join(isolation["notes"])}

    async def _install(self, packages: list[str]) -> None:
        await self._packages.install(packages)
        if self._python != str(self._packages.python):
            # Idle workers run the old interpreter: replace them.
            self._python = str(self._packages.python)
            self._env = worker_environment(self._python, self.settings.env_allow)
            await self._pool.close()
            if self._started:
                await self._pool.fill()

    async def _spawn(self) -> WorkerProcess:
        return await WorkerProcess.spawn(self._python, self._env, self.settings.network, self.settings.cpu_s)

    def _limits(self) -> Limits:
        s = self.settings
        return Limits(cpu_s=s.cpu_s, memory_mb=s.memory_mb, max_processes=s.max_processes, max_file_mb=s.max_file_mb)

    def _session_uid(self) -> int | None:
        if os.geteuid() != 0:
            return None
        uid = self._next_uid
        self._next_uid = SESSION_UIDS.start + (uid + 1 - SESSION_UIDS.start) % len(SESSION_UIDS)
        return uid

    def _setup_request(self, workdir: Path, uid: int | None, functions: FunctionSet) -> dict[str, Any]:
        return {
            "op": "setup",
            "workdir": str(workdir),
            "uid": uid,
            "limits": asdict(self._limits()),
            "max_output_chars": self.settings.max_output_chars,
            "timeout_s": self.settings.timeout_s,
            "functions": [{"name": f.name, "code": f.code} for f in functions],
        }

    def _probe_isolation(self) -> dict[str, Any]:
        """describe() before any session: set up one worker outside the pool (which belongs to the caller's
        event loop, if any) and ask it what it could enforce."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as thread:
            self._isolation = thread.submit(asyncio.run, self._probe()).result()
        return self._isolation

    async def _probe(self) -> dict[str, Any]:
        uid = self._session_uid()
        workdir = self._workdirs.new_workdir((), uid)
        worker = await self._spawn()
        try:
            reply = await worker.request(self._setup_request(workdir, uid, FunctionSet()), self.settings.timeout_s)
            return reply["isolation"]
        finally:
            await worker.kill()
            shutil.rmtree(workdir, ignore_errors=True)


def _filesystem_report(isolation: dict[str, Any]) -> str:
    if isolation["uid"] is None:
        return "code runs as the trainer's user: it can write wherever the trainer can"
    hidden = (
        f", except in {', '.join(isolation['hidden_dirs'])} (bar the interpreter)" if isolation["hidden_dirs"] else ""
    )
    private = ", ".join(isolation["private_dirs"]) or "none"
    return (
        f"writes only to the session workdir and private, emptied temp dirs ({private}); "
        f"reads whatever is world-readable{hidden}"
    )
