"""The process backend of the sandbox: model-written code runs in forked, confined worker processes.

    sandbox = Sandbox(experiment.sandbox)
    await sandbox.start()
    async with sandbox.session(functions, files=example.files) as session:   # one per rollout
        result = await session.run_code("x = 2\\nprint(x)")
        result = await session.call_function("evaluate_expression", {"expression": "2+2"})

Nothing here executes user code: each session gets a worker from a warm pool, forked from the fork server's
template (forkserver.py) or spawned where that is impossible, confined as well as this machine allows
(isolation.py, cgroups.py); `describe()` says what is enforced. Where the filesystem cannot be sealed,
`start()` refuses unless the config accepts a weaker sandbox.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import secrets
import shutil
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from agenttrain.config import SandboxConfig
from agenttrain.forking import ForkServer, ForkServerError
from agenttrain.functions import FunctionSet
from agenttrain.sandbox import replies
from agenttrain.sandbox.cgroups import SessionCgroups
from agenttrain.sandbox.forkserver import CONTROL_TIMEOUT_S, launch_template
from agenttrain.sandbox.interface import STATE_LOST, ExecResult, SandboxError
from agenttrain.sandbox.isolation import Limits
from agenttrain.sandbox.network import find_slirp4netns
from agenttrain.sandbox.packages import PackageEnvironment, check_requirements, distribution_names, find_missing
from agenttrain.sandbox.pool import (
    PRELOADED_MODULES,
    WarmPool,
    WorkerDied,
    WorkerProcess,
    WorkerTimeout,
    worker_environment,
)
from agenttrain.sandbox.workdirs import WorkdirRoot

log = logging.getLogger(__name__)
# Each session runs as its own throwaway uid (when we are root), so RLIMIT_NPROC counts one session's
# processes only and sessions cannot touch each other's files. Far above any real account's uid.
SESSION_UIDS = range(1_500_000_000, 1_600_000_000)
# Without a memory cgroup, per-process limits must add up to at most memory_mb: a process gets at least this
# much address space (a forked worker maps ~180 MB), and the session fewer processes instead.
MIN_PROCESS_MB = 512


class SandboxSession:
    """The code-execution state of one rollout. Calls are serialized; a worker that dies is replaced."""

    def __init__(self, sandbox: Sandbox, setup: dict[str, Any], functions: FunctionSet, workdir: Path) -> None:
        self.workdir = workdir
        self._sandbox = sandbox
        self._setup = setup
        self._functions = [{"name": f.name, "code": f.code} for f in functions]
        self._worker: WorkerProcess | None = None
        self._starting: asyncio.Task[WorkerProcess] | None = None  # a worker started ahead of the first call
        self._lock = asyncio.Lock()

    def prefetch(self) -> None:
        """Start the worker in the background, so that its start-up overlaps the rollout's first LLM turn."""
        if self._worker is None and self._starting is None:
            self._starting = asyncio.create_task(self._start_worker())

    async def run_code(self, code: str) -> ExecResult:
        """Run a code block; state persists across calls in this session, like notebook cells."""
        return await self._request({"op": "run", "code": code})

    async def call_function(self, name: str, arguments: dict[str, Any]) -> ExecResult:
        return await self._request({"op": "call", "name": name, "arguments": arguments})

    async def _request(self, message: dict[str, Any]) -> ExecResult:
        async with self._lock:
            started = time.monotonic()
            settings = self._sandbox.settings
            try:
                worker = await self._ready_worker()
                ok, output, error, value = replies.result(
                    await worker.request(message, settings.timeout_s), settings.max_output_chars
                )
            except (WorkerTimeout, WorkerDied) as exc:
                # Whatever the code did (crashed, hung, broke the worker or wrote on its channel): this call's error.
                await self.stop_worker()
                return ExecResult(False, STATE_LOST, str(exc), duration_s=time.monotonic() - started)
            return ExecResult(ok, output, error, value, duration_s=time.monotonic() - started)

    async def _ready_worker(self) -> WorkerProcess:
        if self._worker is None and self._starting is not None:
            starting, self._starting = self._starting, None
            self._worker = await starting  # fails as the start-up would have in the caller's time
        if self._worker is None:
            self._worker = await self._start_worker()
        return self._worker

    async def _start_worker(self) -> WorkerProcess:
        worker = await self._sandbox.take_worker()
        settings = self._sandbox.settings
        functions = self._functions
        try:
            # Sent together: the worker confines itself and reports how, before any model code runs; then loading
            # runs the functions' top-level code (the worker limits each one; this timeout is a backstop).
            setup = worker.send(self._setup)
            load = worker.send({"op": "load", "functions": functions}) if functions else None
            isolation = replies.isolation(await worker.reply(setup, settings.timeout_s))
            if load is not None:
                replies.result(await worker.reply(load, settings.timeout_s * (1 + len(functions))), 0)
        except BaseException:
            await self._sandbox.release(worker)
            raise
        self._sandbox.record_isolation(isolation)
        return worker

    async def stop_worker(self) -> None:
        """Kill the worker; a later call would start a fresh one, without the earlier state."""
        if self._starting is not None:
            starting, self._starting = self._starting, None
            starting.cancel()  # a cancelled start-up releases the worker it took
            await asyncio.wait({starting})  # its outcome is not raised here (nobody called it); our own cancel is
            if not starting.cancelled() and starting.exception() is None:
                self._worker = starting.result()
        if self._worker is not None:
            await self._sandbox.release(self._worker)
            self._worker = None

    async def close(self) -> None:
        await self.stop_worker()
        await asyncio.to_thread(shutil.rmtree, self.workdir, ignore_errors=True)


class Sandbox:
    """Implements interface.CodeSandbox with processes on this machine."""

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
        self._forkserver: ForkServer | None = None
        self._launched: ForkServer | None = None  # a template started by `launch`, not yet ready
        self._start_method = {"method": "not started", "why": ""}
        self._cgroups: SessionCgroups | None = None
        self._cgroups_how: dict[str, str] = {}  # per controller: where, or why none
        self._slirp4netns = find_slirp4netns() if settings.network else None
        self._start_task: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """Start the fork server, check the isolation, warm the pool. Idempotent: a call while a start is under
        way (see `start_soon`) waits for that start and raises what it raised."""
        if self._start_task is None:
            self.start_soon()
        assert self._start_task is not None
        await asyncio.shield(self._start_task)

    def launch(self) -> None:
        """Start the fork server's template now, without an event loop or waiting: its imports run while the
        caller goes on (the CLI loads the rest of itself and checks the endpoint meanwhile); `start` adopts it.
        A template that cannot start is left for `start` to report."""
        if self._launched is None and self._forkserver is None:
            with contextlib.suppress(ForkServerError):
                self._launched = launch_template(self._python, self._env, PRELOADED_MODULES)

    def start_soon(self) -> None:
        """Begin starting in the background (the template's imports overlap the model's first turn); the first
        session waits for it. Needs a running event loop."""
        if self._start_task is None:
            self._start_task = asyncio.ensure_future(self._start())

    async def _start(self) -> None:
        if self.settings.network and self._slirp4netns is None:
            log.warning(
                "sandbox.network: true, but slirp4netns is not installed: model code shares this machine's network and "
                "can reach its local services (the LLM endpoint, the viewer). Install it (apt install slirp4netns)."
            )
        self._cgroups, self._cgroups_how = await asyncio.to_thread(SessionCgroups.create)
        await self._start_forkserver()
        if self._isolation is None:
            self._isolation = await self._probe()
        if not self._isolation["sealed"] and not self.settings.allow_unsealed:
            await self._stop_processes()
            raise SandboxError(
                "the sandbox cannot seal the filesystem on this machine ("
                + ("; ".join(self._isolation["notes"]) or "no mount namespace")
                + "), so model-written code could read your data, runs and source code. Run on Linux with user "
                "namespaces enabled (e.g. sysctl user.max_user_namespaces > 0; in a container, one that allows "
                "them) or as root, or set `sandbox.allow_unsealed: true` to accept a weaker sandbox"
            )
        await self._pool.fill()

    async def close(self) -> None:
        """Kill every worker, idle or in a session, and the fork server; remove workdirs and cgroups; idempotent."""
        starting, self._start_task = self._start_task, None
        if starting is not None:
            await asyncio.wait([starting])  # a start under way finishes first: the processes it starts are ours to stop
            if not starting.cancelled():
                starting.exception()  # raised to whoever waited for the start; retrieved so asyncio does not warn
        await self._stop_processes()

    async def _stop_processes(self) -> None:
        await self._pool.close()
        for session in list(self._sessions):
            await session.stop_worker()
        if self._launched is not None:  # launched, never started: a run that failed its checks
            await asyncio.to_thread(self._launched.close)
            self._launched = None
        if self._forkserver is not None:
            await asyncio.to_thread(self._forkserver.close)
            self._forkserver = None
        if self._cgroups is not None:
            await asyncio.to_thread(self._cgroups.close)
        await asyncio.to_thread(self._workdirs.close)

    def session(
        self, functions: FunctionSet, files: Sequence[Path] = ()
    ) -> AbstractAsyncContextManager[SandboxSession]:
        return self._session(functions, files)

    @contextlib.asynccontextmanager
    async def _session(self, functions: FunctionSet, files: Sequence[Path]) -> AsyncIterator[SandboxSession]:
        uid = self._session_uid()
        workdir = await asyncio.to_thread(self._workdirs.new_workdir, files, uid)
        session = SandboxSession(self, self._setup_request(workdir, uid), functions, workdir)
        self._sessions.add(session)
        if len(functions):  # the model is offered functions: it will most likely call one
            session.prefetch()
        try:
            yield session
        finally:
            self._sessions.discard(session)
            await session.close()

    async def take_worker(self) -> WorkerProcess:
        await self.start()
        try:
            return await self._pool.take()
        except (WorkerDied, ForkServerError, OSError) as exc:
            raise SandboxError(f"cannot start a sandbox worker with {self._python}: {exc}") from None

    async def release(self, worker: WorkerProcess) -> None:
        await worker.kill()
        if self._cgroups is not None and worker.pid:
            self._cgroups.remove(worker.pid)

    def record_isolation(self, isolation: dict[str, Any]) -> None:
        self._isolation = isolation

    async def missing_packages(self, packages: Sequence[str]) -> list[str]:
        """The packages the sandbox cannot import; with `install_packages`, they are installed first. Raises
        InvalidPackage (a UserError) for an entry that is not a package name, before anything runs."""
        check_requirements(packages)
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
            "start": self._start_method,
            "limits": self.settings.model_dump(include={"cpu_s", "cpus", "memory_mb", "max_processes", "max_file_mb",
                                                        "disk_mb", "timeout_s", "max_output_chars"}),
            "memory": self._memory_report(isolation),
            "cpu": self._cpu_report(isolation),
            "network": self._network_report(isolation),
            "process_limit_enforced": isolation["process_limit"],  # see isolation.apply_limits
            "filesystem": _filesystem_report(isolation, self.settings.disk_mb),
            "kills_detached_processes": isolation["pid_namespace"] or self._cgroups is not None,
            "isolation": isolation,
            "env_allow": list(self.settings.env_allow),
            "warm_workers": self.settings.warm_workers,
        }  # fmt: skip

    def _memory_capped(self) -> bool:
        return self._cgroups is not None and self._cgroups.has("memory")

    def _memory_report(self, isolation: dict[str, Any]) -> dict[str, Any]:
        if not self._cgroups_how:
            return {"how": "decided when the sandbox starts"}
        if self._memory_capped():
            return {"whole_session_mb": self.settings.memory_mb, "how": self._cgroups_how["memory"]}
        limits = self._limits()
        per_process = f"per-process limits instead, {limits.memory_mb} MB x {limits.max_processes}"
        how = f"{self._cgroups_how['memory']}: {per_process}"
        if not isolation["process_limit"]:  # RLIMIT_NPROC needs a uid or user namespace of the session's own
            return {"whole_session_mb": None, "how": how + " processes, but their number is not limited here"}
        return {"whole_session_mb": limits.memory_mb * limits.max_processes, "how": how + " processes"}

    def _cpu_report(self, isolation: dict[str, Any]) -> dict[str, Any]:
        if not self._cgroups_how:
            return {"enforced": False, "how": "decided when the sandbox starts"}
        if isolation["cpu_limit"]:
            return {"session_cpus": self.settings.cpus, "enforced": True, "how": self._cgroups_how["cpu"]}
        how = self._cgroups_how.get("cpu", "no CPU cgroup")
        return {
            "session_cpus": None,
            "enforced": False,
            "how": f"{how}: each process stops at cpu_s, each call at timeout_s, and sessions run at nice 19",
        }

    def _network_report(self, isolation: dict[str, Any]) -> dict[str, Any]:
        if self.settings.network and isolation["web_only_network"]:
            how = (
                "a network namespace of its own whose only way out is slirp4netns: the host's loopback and own "
                "addresses, link-local addresses and private ranges are unreachable"
            )
            return {"allowed": True, "enforced": False, "host_services_unreachable": True, "how": how}
        if self.settings.network and isolation["network_namespace"]:
            how = "no network at all: " + "; ".join(isolation["notes"])
            return {"allowed": True, "enforced": True, "host_services_unreachable": True, "how": how}
        if self.settings.network:
            why = "slirp4netns is not installed" if self._slirp4netns is None else "; ".join(isolation["notes"])
            how = f"the host's network, its loopback services included ({why})"
            return {"allowed": True, "enforced": False, "host_services_unreachable": False, "how": how}
        if isolation["network_namespace"]:
            return {"allowed": False, "enforced": True, "how": "private network namespace without interfaces"}
        return {"allowed": False, "enforced": False, "how": "not enforced: " + "; ".join(isolation["notes"])}

    async def _install(self, packages: list[str]) -> None:
        await self._packages.install(packages)
        if self._python != str(self._packages.python):
            # Idle workers and the template run the old interpreter: replace them.
            self._python = str(self._packages.python)
            self._env = worker_environment(self._python, self.settings.env_allow)
            await self._pool.close()
            if self._forkserver is not None:
                await asyncio.to_thread(self._forkserver.close)
                self._forkserver = None
            if self._start_task is not None:
                await self._start_forkserver()
                await self._pool.fill()

    async def _start_forkserver(self) -> None:
        try:
            if self._launched is None:
                self._launched = await asyncio.to_thread(launch_template, self._python, self._env, PRELOADED_MODULES)
            await asyncio.to_thread(self._launched.wait_ready, CONTROL_TIMEOUT_S)  # closes it if it fails
            self._forkserver, self._launched = self._launched, None
            self._start_method = {"method": "fork server", "why": "each session is a fork of a template process"}
        except ForkServerError as exc:
            self._launched = None
            self._start_method = {"method": "spawn", "why": f"no fork server: {exc}"}

    async def _spawn(self) -> WorkerProcess:
        limits = (self.settings.cpu_s, self.settings.memory_mb)
        settings = {
            "network": self.settings.network,
            "slirp4netns": self._slirp4netns,
            "memory_mb": self.settings.memory_mb,
            "cpus": self.settings.cpus,
            "cgroups": None if self._cgroups is None else self._cgroups.settings(),
            "max_reply_bytes": replies.max_reply_bytes(self.settings.max_output_chars),
        }
        if self._forkserver is not None and self._forkserver.alive:
            return await WorkerProcess.fork(self._forkserver, settings, limits)
        return await WorkerProcess.spawn(self._python, self._env, settings, limits)

    def _limits(self) -> Limits:
        s = self.settings
        memory_mb, processes = s.memory_mb, s.max_processes
        if not self._memory_capped():  # no cap on the whole tree: per-process caps whose sum stays within memory_mb
            processes = max(1, min(processes, memory_mb // MIN_PROCESS_MB))
            memory_mb //= processes
        return Limits(
            cpu_s=s.cpu_s, memory_mb=memory_mb, max_processes=processes, max_file_mb=s.max_file_mb, disk_mb=s.disk_mb
        )

    def _session_uid(self) -> int | None:
        if os.geteuid() != 0:
            return None
        uid = self._next_uid
        self._next_uid = SESSION_UIDS.start + (uid + 1 - SESSION_UIDS.start) % len(SESSION_UIDS)
        return uid

    def _setup_request(self, workdir: Path, uid: int | None) -> dict[str, Any]:
        return {
            "op": "setup",
            "workdir": str(workdir),
            "uid": uid,
            "limits": asdict(self._limits()),
            "max_output_chars": self.settings.max_output_chars,
            "timeout_s": self.settings.timeout_s,
        }

    def _probe_isolation(self) -> dict[str, Any]:
        """describe() before start: set up one worker outside the pool (which belongs to the caller's event
        loop, if any) and ask it what it could enforce."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as thread:
            self._isolation = thread.submit(asyncio.run, self._probe()).result()
        return self._isolation

    async def _probe(self) -> dict[str, Any]:
        uid = self._session_uid()
        workdir = await asyncio.to_thread(self._workdirs.new_workdir, (), uid)
        worker = await self._spawn()
        try:
            return replies.isolation(await worker.request(self._setup_request(workdir, uid), self.settings.timeout_s))
        except WorkerDied as exc:
            raise SandboxError(f"the sandbox worker could not be set up with {self._python}: {exc}") from None
        finally:
            await self.release(worker)
            shutil.rmtree(workdir, ignore_errors=True)


def _filesystem_report(isolation: dict[str, Any], disk_mb: int) -> str:
    if isolation["sealed"]:
        return (
            "sealed: the code sees only the system's and the interpreter's folders (read-only), its workdir and "
            f"private temp dirs ({', '.join(isolation['private_dirs'])}), all in one {disk_mb} MB tmpfs"
        )
    if isolation["uid"] is None:
        return "not sealed: code runs as the trainer's user, reads and writes wherever the trainer can"
    return "not sealed: code reads whatever is world-readable, writes only to its workdir"
