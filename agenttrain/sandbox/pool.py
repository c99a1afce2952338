"""Trainer-side handles to sandbox workers, and the warm pool that hides their start-up time.

A session (see supervisor.py and worker.py) is forked from the fork server's template, or spawned where that is
impossible, and waits with sympy and numpy imported. The pool keeps `size` such workers ready; a taken worker serves one
session and is then killed, never reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from agenttrain.forking import ForkServer, python_entry
from agenttrain.sandbox import channel

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
KILL_WAIT_S = 5  # for the kernel to end every process of a killed session
WROTE_ON_CHANNEL = "the code wrote to the sandbox's private channel; the worker was stopped"


class WorkerDied(Exception):
    """The worker process ended during a request, or broke its channel; the message says how."""


class WorkerTimeout(Exception):
    """A request took longer than its time limit; the worker has been killed."""


def worker_environment(python: str, allow: Sequence[str], parent: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Only what code needs to run, plus the variables the config explicitly lets through."""
    path = os.pathsep.join([os.path.dirname(python), "/usr/local/bin", "/usr/bin", "/bin"])
    allowed = {name: parent[name] for name in allow if name in parent}
    return {"PATH": path, **BASE_ENVIRONMENT, **allowed}


def describe_exit(report: dict[str, Any], cpu_s: int, memory_mb: int) -> str:
    """How the worker ended, from its supervisor's `exit` report."""
    if "broken" in report:  # what the worker sent its supervisor was no frame our worker sends
        return WROTE_ON_CHANNEL
    status = report["status"]
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        if number == signal.SIGXCPU:
            return f"CPU time limit exceeded ({cpu_s} s)"
        if number == signal.SIGKILL and report.get("out_of_memory"):
            return f"memory limit exceeded ({memory_mb} MB for the whole session)"
        return f"killed by signal {number} ({signal.Signals(number).name})"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


class WorkerProcess:
    """One session's process tree (supervisor, worker and what it starts), reached over its private channel."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limits: tuple[int, int],
        max_reply_bytes: int, process: asyncio.subprocess.Process | None = None,
    ) -> None:  # fmt: skip
        self._reader, self._writer = reader, writer
        self._cpu_s, self._memory_mb = limits
        self._max_reply_bytes = max_reply_bytes
        self._process = process  # spawned: our child and the supervisor's parent (a forked one is the template's)
        self.pid = 0  # the session's supervisor, as seen from here
        self._pidfd: int | None = None
        self._last_id = 0

    @classmethod
    async def fork(cls, server: ForkServer, settings: dict[str, Any], limits: tuple[int, int]) -> WorkerProcess:
        """A worker forked from the fork server's template. `settings`: as for supervisor.fork_session."""
        ours, theirs = socket.socketpair()
        try:
            server.fork(settings, theirs)
        finally:
            theirs.close()
        return await cls._connect(ours, limits, settings["max_reply_bytes"], None)

    @classmethod
    async def spawn(
        cls, python: str, env: Mapping[str, str], settings: dict[str, Any], limits: tuple[int, int]
    ) -> WorkerProcess:
        """A worker in a fresh interpreter, where no template is available."""
        ours, theirs = socket.socketpair()
        arguments = {**settings, "channel_fd": theirs.fileno(), "preload": list(PRELOADED_MODULES)}
        entry = python_entry("from agenttrain.sandbox.supervisor import main; main()")
        try:
            process = await asyncio.create_subprocess_exec(
                python, "-c", entry, json.dumps(arguments), env=dict(env), cwd="/",
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, pass_fds=[theirs.fileno()],
            )  # fmt: skip
        finally:
            theirs.close()
        return await cls._connect(ours, limits, settings["max_reply_bytes"], process)

    @classmethod
    async def _connect(
        cls, sock: socket.socket, limits: tuple[int, int], max_reply_bytes: int,
        process: asyncio.subprocess.Process | None,
    ) -> WorkerProcess:  # fmt: skip
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=1 << 20)
        worker = cls(reader, writer, limits, max_reply_bytes, process)
        try:
            ready = await worker._supervisor_report()
            if ready.get("event") != "ready" or type(ready.get("pid")) is not int:
                raise WorkerDied(describe_exit(ready, *limits) if ready.get("event") == "exit" else "no ready report")
            worker.pid = ready["pid"]
            if process is None:
                worker._pidfd = os.pidfd_open(worker.pid)
        except BaseException:
            await worker.kill()
            raise
        return worker

    @property
    def alive(self) -> bool:
        if self._process is not None:
            return self._process.returncode is None
        if self._pidfd is None:
            return not self._writer.is_closing()
        return not select.select([self._pidfd], [], [], 0)[0]  # a pidfd is readable once its process ended

    def send(self, message: dict[str, Any]) -> int:
        """Queue one request; returns its id, which its reply carries."""
        self._last_id += 1
        self._writer.write(channel.message_frame(channel.FROM_TRAINER, self._last_id, message))
        return self._last_id

    async def request(self, message: dict[str, Any], timeout_s: float) -> bytes:
        """Send one request and wait for its reply (the worker's body: untrusted, see replies.py); on timeout the
        whole process tree is killed."""
        return await self.reply(self.send(message), timeout_s)

    async def reply(self, request_id: int, timeout_s: float) -> bytes:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the read below reports how it ended
            await self._writer.drain()
        try:
            return await asyncio.wait_for(self._reply(request_id), timeout_s)
        except asyncio.TimeoutError:
            await self.kill()
            raise WorkerTimeout(f"timeout after {timeout_s:g}s") from None

    async def _reply(self, request_id: int) -> bytes:
        tag, replied_to, body = await self._frame()
        if tag == channel.FROM_WORKER and replied_to == request_id:
            return body
        report = _report(body) if tag == channel.FROM_SUPERVISOR else {}
        await self.kill()
        if report.get("event") == "exit" and (type(report.get("status")) is int or "broken" in report):
            raise WorkerDied(describe_exit(report, self._cpu_s, self._memory_mb))
        raise WorkerDied("the sandbox's private channel carried a frame out of turn; the worker was stopped")

    async def _supervisor_report(self) -> dict[str, Any]:
        tag, _, body = await self._frame()
        return _report(body) if tag == channel.FROM_SUPERVISOR else {}

    async def _frame(self) -> tuple[bytes, int, bytes]:
        try:
            header = await self._reader.readexactly(channel.HEADER.size)
            length, tag, request_id = channel.parse_header(header, self._max_reply_bytes)
            return tag, request_id, await self._reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            await self.kill()
            raise WorkerDied("the sandbox worker ended without saying how") from None
        except channel.BadFrame as exc:  # the supervisor bounds what it relays: only a broken one sends this
            await self.kill()
            raise WorkerDied(f"the sandbox's private channel broke ({exc}); the worker was stopped") from None

    async def kill(self) -> None:
        """Kill the whole session tree and wait until it is gone.

        Killing the supervisor ends its PID namespace: the kernel kills every process in it before the supervisor
        is gone. Its process group is killed too, for machines without a PID namespace.
        """
        if self.alive and self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._exited(), KILL_WAIT_S)
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
        if self._process is not None and self._process.returncode is None:
            self._process.kill()  # the supervisor, if it started, dies with it (its parent-death signal)
        self._writer.close()
        await self._exited()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    async def _exited(self) -> None:
        if self._process is not None:
            await self._process.wait()
        elif self._pidfd is not None:
            await _until_readable(self._pidfd)


def _report(body: bytes) -> dict[str, Any]:
    """A supervisor's report: our own code wrote it, but a broken one must not raise here either."""
    try:
        report = json.loads(body)
    except ValueError:
        return {}
    return report if isinstance(report, dict) else {}


async def _until_readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)


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
        ready, self._ready = list(self._ready), deque()
        await asyncio.gather(*(worker.kill() for worker in ready))  # together: each waits until its tree is gone

    def _replenish(self) -> None:
        for _ in range(self._size - len(self._ready) - len(self._starting)):
            task = asyncio.create_task(self._start_one())
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    async def _start_one(self) -> None:
        # A failure here is not lost: the next `take` finds no ready worker and spawns, raising the same error.
        with contextlib.suppress(Exception):
            self._ready.append(await self._spawn())
