"""Scoring off the caller's thread, in worker processes, each item under a time limit.

A scorer may run for a long time on hostile input (sympy simplification, regexes on huge replies), and
math-verify's own timeouts only work on the main thread. So each item is sent to a worker process; when
it does not answer within the limit, that worker is killed and replaced, and the item is judged wrong
with a note. Workers are forks of a template process (agenttrain/forking.py) that has imported the scorers
and judged one item once, so a pool of N workers, and each replacement, costs one set of imports instead of N
(math-verify's take ~0.6 s of CPU). The template is a fresh interpreter, not a fork of the caller: safe while
the caller runs threads, and it never re-imports the caller's main script. Where it cannot start, workers are
fresh interpreters (`python -m agenttrain.scorers.worker`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from agenttrain.forking import ForkServer, ForkServerError
from agenttrain.scorers.in_process import judge_in_thread, runs_in_process
from agenttrain.scorers.judging import ROLLOUT_FIELD, check_scorer, wants_rollout
from agenttrain.scorers.verdict import Verdict

Job = tuple[str, str | None, str, dict[str, Any]]  # scorer, prediction, answer, fields
READY = "ready"  # what a worker sends once it can take jobs
FIELD_KEYS = ("choices", "unit")  # the per-example extras a scorer may read
STARTUP_TIMEOUT_S = 60.0
TEMPLATE_ENV = "AGENTTRAIN_SCORER_TEMPLATE"  # the control socket of a template a parent process hands down
KILL_WAIT_S = 5.0  # for the kernel to end a killed worker


class ScorerWorkerError(RuntimeError):
    """A scorer process that does not start: a broken installation, not a bad answer."""


def _forked(template: ForkServer | None, channel: socket.socket) -> bool:
    """Whether `template` took the request for a worker on `channel` (it may have died since it was checked)."""
    if template is None:
        return False
    try:
        template.fork({}, channel)
    except ForkServerError:
        return False
    return True


class _Worker:
    """One scorer process: forked from `template`, or a fresh interpreter where there is none."""

    def __init__(self, template: ForkServer | None) -> None:
        ours, theirs = socket.socketpair()
        self._process: subprocess.Popen[bytes] | None = None
        self._pidfd: int | None = None
        with theirs:
            if not _forked(template, theirs):
                self._process = subprocess.Popen(
                    [sys.executable, "-m", "agenttrain.scorers.worker", str(theirs.fileno())],
                    pass_fds=(theirs.fileno(),),
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # a Ctrl-C in the terminal is the trainer's to handle, not the workers'
                )
        self._connection = Connection(ours.detach())
        self._await_ready()

    def _await_ready(self) -> None:
        problem = None
        try:
            if not self._connection.poll(STARTUP_TIMEOUT_S):
                problem = f"did not start within {STARTUP_TIMEOUT_S:g}s"
            else:
                greeting, pid = self._connection.recv()
                if greeting != READY:
                    problem = "sent an unexpected greeting"
                elif self._process is None:  # the template's child: a pidfd, so that a kill never hits a reused pid
                    self._pidfd = os.pidfd_open(pid)
        except (EOFError, OSError, TypeError, ValueError):
            problem = "exited while starting (its traceback is above)"
        if problem is not None:
            self.stop()
            raise ScorerWorkerError(f"the scorer process {problem}")

    def run(self, job: Job, timeout_s: float) -> Verdict:
        """Raises TimeoutError past the limit and EOFError/OSError if the process died."""
        self._connection.send(job)
        if not self._connection.poll(timeout_s):
            raise TimeoutError
        return self._connection.recv()

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
        elif self._pidfd is not None:  # the template reaps its children
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            select.select([self._pidfd], [], [], KILL_WAIT_S)  # readable once it is gone: none outlives the pool
            os.close(self._pidfd)
            self._pidfd = None
        self._connection.close()


class JudgePool:
    """`size` scorer processes, started on first use, shared by any number of caller threads."""

    def __init__(self, size: int | None = None) -> None:
        self.size = size or os.cpu_count() or 1
        self._idle: queue.SimpleQueue[_Worker | None] = queue.SimpleQueue()
        for _ in range(self.size):
            self._idle.put(None)  # a slot whose process starts when first needed
        self._threads = ThreadPoolExecutor(self.size, thread_name_prefix="agenttrain-scorer")
        self._template: ForkServer | None = None
        self._template_failed = False  # then every worker is spawned
        self._template_lock = threading.Lock()
        self._launching: ForkServer | None = None  # a template still importing, which `close` need not wait for

    def warm(self, scorer: str, workers: int) -> None:
        """Start the template (warmed with `scorer`) and up to `workers` workers (the items the caller may send at
        once) on one of the pool's threads, so that the first items need not wait for the scorers' imports: they
        overlap the caller's own start-up and first requests."""
        self._threads.submit(self._warm, scorer, min(workers, self.size))

    def _warm(self, scorer: str, workers: int) -> None:
        template = self._running_template(scorer)
        if template is None:  # no template (or the pool closed while it started): items start what they need
            return
        for _ in range(workers):
            worker = self._idle.get()
            if worker is None:
                with contextlib.suppress(ScorerWorkerError):  # then an item starts one, and reports the failure
                    worker = _Worker(template)
            self._idle.put(worker)

    def judge(self, job: Job, timeout_s: float) -> Verdict:
        worker = self._idle.get()
        healthy = False
        try:
            worker = worker or _Worker(self._running_template(job[0]))
            verdict = worker.run(job, timeout_s)
            healthy = True
            return verdict
        except TimeoutError:
            return Verdict(correct=False, extracted=None, note=f"scorer timed out after {timeout_s:g}s")
        except (EOFError, OSError) as exc:
            return Verdict(correct=False, extracted=None, note=f"scorer process died ({type(exc).__name__})")
        finally:
            if worker is not None and not healthy:  # it may still be busy: a fresh one starts on demand
                worker.stop()
            self._idle.put(worker if healthy else None)

    def adopt(self, template: ForkServer) -> None:
        """Fork the workers from `template` (one a parent process started), not from one of our own."""
        with self._template_lock:
            self._template = template

    async def judge_async(self, job: Job, timeout_s: float) -> Verdict:
        return await asyncio.get_running_loop().run_in_executor(self._threads, self.judge, job, timeout_s)

    def judge_all(self, jobs: Sequence[Job], timeout_s: float) -> list[Verdict]:
        return list(self._threads.map(lambda job: self.judge(job, timeout_s), jobs))

    def close(self) -> None:
        if (launching := self._launching) is not None:
            launching.close()  # its start fails at once: a run refused early does not wait for the scorers' imports
        self._threads.shutdown(wait=True)
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                break
            if worker is not None:
                worker.stop()
        with self._template_lock:
            if self._template is not None:
                self._template.close()
                self._template = None

    def _running_template(self, scorer: str) -> ForkServer | None:
        """The template, started on first use (warmed with `scorer`) and again if it died; None once it failed
        to start, and then workers are spawned."""
        with self._template_lock:
            if self._template is not None and not self._template.alive:
                self._template.close()
                self._template = None
            if self._template is None and not self._template_failed:
                try:
                    self._launching = launch_template(scorer)
                    self._launching.wait_ready(STARTUP_TIMEOUT_S)
                    self._template = self._launching
                except ForkServerError:
                    self._template_failed = True
                finally:
                    self._launching = None
            return self._template

    def __enter__(self) -> JudgePool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def launch_template(scorer: str) -> ForkServer:
    """A template process that imports the scorers and judges an item with `scorer`, not waited for
    (`ForkServer.wait_ready`). A process that starts others that score (a sweep, its jobs) may hand theirs down:
    `adopt_template`."""
    statement = "from agenttrain.scorers.worker import serve_template; serve_template()"
    # in our folder, with our environment: a plugin's scorer may be importable only from there
    return ForkServer.launch(sys.executable, os.environ, statement, {"warm": scorer}, cwd=os.getcwd())


def start_template(scorer: str) -> ForkServer:
    """`launch_template`, waited for until it is ready; blocking."""
    template = launch_template(scorer)
    template.wait_ready(STARTUP_TIMEOUT_S)
    return template


def adopt_template(control_fd: int) -> None:
    """This process's scorer workers are forked from the template our parent handed down (`ForkServer.control_fd`),
    so this process pays for no scorer imports of its own."""
    _shared_pool().adopt(ForkServer.inherited(control_fd))


_shared: JudgePool | None = None
_shared_lock = threading.Lock()


def _shared_pool() -> JudgePool:
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = JudgePool()
            atexit.register(_shared.close)
        return _shared


def _job(scorer: str, prediction: str | None, answer: str, fields: Mapping[str, Any] | None,
         rollout: Mapping[str, Any] | None = None) -> Job:
    """What a worker judges; the rollout travels only to a scorer that reads it."""
    check_scorer(scorer)
    extras = dict(fields or {})
    if rollout is not None and wants_rollout(scorer):
        extras[ROLLOUT_FIELD] = dict(rollout)
    return scorer, prediction, answer, extras


def warm_judges(scorer: str, workers: int) -> None:
    """Start the shared pool's scorer processes in the background (`JudgePool.warm`); a scorer given as a Python
    function has none."""
    if not runs_in_process(scorer):
        _shared_pool().warm(scorer, workers)


async def judge_async(
    scorer: str,
    prediction: str | None,
    answer: str,
    fields: Mapping[str, Any] | None = None,
    timeout_s: float = 10.0,
    rollout: Mapping[str, Any] | None = None,
) -> Verdict:
    """`judge` in a worker process; past `timeout_s` the item is wrong with a note. Never hangs. `rollout` (the
    whole `Rollout` as JSON) reaches a scorer that reads it. A scorer given as a Python function runs in this
    process instead (in_process.py says why)."""
    if runs_in_process(scorer):
        return await judge_in_thread(scorer, prediction, answer, dict(fields or {}), timeout_s)
    return await _shared_pool().judge_async(_job(scorer, prediction, answer, fields, rollout), timeout_s)


def judge_many(
    scorer: str, items: Sequence[Mapping[str, Any]], timeout_s: float = 10.0, workers: int | None = None
) -> list[Verdict]:
    """Judge `items` (prediction, answer, optional choices/unit) in parallel processes, in input order."""
    jobs = [
        _job(scorer, item["prediction"], item["answer"], {key: item[key] for key in FIELD_KEYS if key in item})
        for item in items
    ]
    if workers is None:
        return _shared_pool().judge_all(jobs, timeout_s)
    with JudgePool(workers) as pool:
        return pool.judge_all(jobs, timeout_s)
