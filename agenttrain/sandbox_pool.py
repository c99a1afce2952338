"""Trainer-side handles to sandbox worker processes, and the warm pool that hides their start-up time.

A worker (see sandbox_worker.py) is spawned with a scrubbed environment in its own process group, imports
sympy and numpy, and waits. The pool keeps `size` such workers ready; a taken worker serves one session and
is then killed, never reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

PRELOADED_MODULES = ("sympy", "numpy")
BASE_ENVIRONMENT = {
    "LANG": "C.UTF-8",
    "PYTHONHASHSEED": "0",  # reproducible set/dict-of-str ordering in printed output
    "PYTHONIOENCODING": "utf-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "USER": "sandbox",  # the uid usually has no passwd entry; getpass.getuser() reads these first
    "LOGNAME": "sandbox",
    "MPLBACKEND": "Agg",
    # Many workers share few cores: one BLAS/OpenMP thread each (threads also count towards RLIMIT_NPROC).
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
MAX_REPLY_BYTES = 1 << 26  # output is truncated worker-side; this only bounds a pathological reply
WORKER_ENTRY = "from agenttrain.sandbox_worker import main; main()"


class WorkerDied(Exception):
    """The worker process ended during a request; the message says how (signal, exit status)."""


class WorkerTimeout(Exception):
    """A request took longer than its time limit; the worker has been killed."""


class WorkerFailed(Exception):
    """The worker reported an internal error (a bug or a broken environment, not the user's code)."""


def worker_environment(python: str, allow: Sequence[str], parent: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Only what code needs to run, plus the variables the config explicitly lets through."""
    path = os.pathsep.join([os.path.dirname(python), "/usr/local/bin", "/usr/bin", "/bin"])
    allowed = {name: parent[name] for name in allow if name in parent}
    return {"PATH": path, **BASE_ENVIRONMENT, **allowed}


def describe_exit(status: int, cpu_s: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        if number == signal.SIGXCPU:
            return f"CPU time limit exceeded ({cpu_s} s)"
        return f"killed by signal {number} ({signal.Signals(number).name})"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


class WorkerProcess:
    """One worker process tree (launcher, init, worker) and its request/reply pipe."""

    def __init__(self, process: asyncio.subprocess.Process, cpu_s: int) -> None:
        self._process = process
        self._cpu_s = cpu_s

    @classmethod
    async def spawn(cls, python: str, env: Mapping[str, str], network: bool, cpu_s: int) -> WorkerProcess:
        settings = json.dumps({"network": network, "preload": list(PRELOADED_MODULES)})
        process = await asyncio.create_subprocess_exec(
            python, "-c", WORKER_ENTRY, settings,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=dict(env), cwd="/",
            start_new_session=True, limit=MAX_REPLY_BYTES,
        )  # fmt: skip
        worker = cls(process, cpu_s)
        try:
            await worker._reply()  # the "ready" event
        except BaseException:
            await worker.kill()
            raise
        return worker

    @property
    def alive(self) -> bool:
        return self._process.returncode is None

    async def request(self, message: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Send one request and wait for its reply; on timeout the whole process tree is killed."""
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(json.dumps(message).encode() + b"\n")
            await self._process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the reply read below reports how the worker ended
        try:
            return await asyncio.wait_for(self._reply(), timeout_s)
        except asyncio.TimeoutError:
            await self.kill()
            raise WorkerTimeout(f"timeout after {timeout_s:g}s") from None

    async def _reply(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = await self._process.stdout.readline()
        if not line:
            await self.kill()
            raise WorkerDied(describe_exit(await self._process.wait(), self._cpu_s))
        try:
            reply = json.loads(line)
            event = reply["event"]
        except (ValueError, TypeError, KeyError):  # model code wrote to the reply pipe itself
            await self.kill()
            raise WorkerDied("the worker's reply channel was written to by the code; the worker was stopped") from None
        if event == "exit":
            await self.kill()
            raise WorkerDied(describe_exit(reply["status"], self._cpu_s))
        if event == "failed":
            await self.kill()
            raise WorkerFailed(reply["error"])
        return reply

    async def kill(self) -> None:
        """SIGKILL the process group; with a PID namespace that also ends processes that left the group."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
        await self._process.wait()


class WarmPool:
    """Keeps `size` started workers waiting; `take` hands one out and starts a replacement in the background."""

    def __init__(self, spawn: Callable[[], Awaitable[WorkerProcess]], size: int) -> None:
        self._spawn = spawn
        self._size = size
        self._ready: deque[WorkerProcess] = deque()
        self._starting: set[asyncio.Task[None]] = set()

    async def fill(self) -> None:
        self._replenish()
        await asyncio.gather(*self._starting, return_exceptions=True)

    async def take(self) -> WorkerProcess:
        while self._ready:
            worker = self._ready.popleft()
            if worker.alive:
                self._replenish()
                return worker
        self._replenish()
        return await self._spawn()

    async def close(self) -> None:
        for task in self._starting:
            task.cancel()
        await asyncio.gather(*self._starting, return_exceptions=True)
        while self._ready:
            await self._ready.popleft().kill()

    def _replenish(self) -> None:
        for _ in range(self._size - len(self._ready) - len(self._starting)):
            task = asyncio.create_task(self._start_one())
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    async def _start_one(self) -> None:
        # A failure here is not lost: the next `take` finds no ready worker and spawns, raising the same error.
        with contextlib.suppress(Exception):
            self._ready.append(await self._spawn())
