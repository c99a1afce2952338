"""Scoring off the caller's thread, in worker processes, each item under a time limit.

A scorer may run for a long time on hostile input (sympy simplification, regexes on huge replies), and
math-verify's own timeouts only work on the main thread. So each item is sent to a worker process; when
it does not answer within the limit, that worker is killed and replaced, and the item is judged wrong
with a note. Workers come from a forkserver (a clean single-threaded parent, safe while the caller has
threads) and have their address space capped so a runaway expression cannot exhaust the machine.
"""

from __future__ import annotations

import asyncio
import atexit
import multiprocessing
import os
import queue
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from agenttrain.scorers.registry import check_scorer, judge
from agenttrain.scorers.verdict import Verdict

WORKER_MEMORY_BYTES = 2 * 1024**3
FIELD_KEYS = ("choices", "unit")  # the per-example extras a scorer may read

_CONTEXT = multiprocessing.get_context("forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn")
if _CONTEXT.get_start_method() == "forkserver":
    _CONTEXT.set_forkserver_preload(["agenttrain.scorers"])

Job = tuple[str, str | None, str, dict[str, Any]]


def _cap_memory() -> None:
    try:
        import resource
    except ImportError:  # not POSIX: no cap
        return
    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))


def _serve(connection: Connection) -> None:
    """Worker loop: judge each job received, until the pipe closes or a None arrives."""
    _cap_memory()
    while (job := connection.recv()) is not None:
        scorer, prediction, answer, fields = job
        try:
            verdict = judge(scorer, prediction, answer, fields)
        except Exception as exc:  # a scorer bug must cost one item, not the run
            verdict = Verdict(correct=False, extracted=None, note=f"scorer error: {type(exc).__name__}: {exc}")
        connection.send(verdict)


class _Worker:
    def __init__(self) -> None:
        self._connection, child = _CONTEXT.Pipe()
        self._process = _CONTEXT.Process(target=_serve, args=(child,), daemon=True, name="agenttrain-scorer")
        self._process.start()
        child.close()

    def run(self, job: Job, timeout_s: float) -> Verdict:
        """Raises TimeoutError past the limit and EOFError/OSError if the process died."""
        self._connection.send(job)
        if not self._connection.poll(timeout_s):
            raise TimeoutError
        return self._connection.recv()

    def stop(self) -> None:
        self._process.kill()
        self._process.join()
        self._connection.close()


class JudgePool:
    """`size` scorer processes, started on first use, shared by any number of caller threads."""

    def __init__(self, size: int | None = None) -> None:
        self.size = size or os.cpu_count() or 1
        self._idle: queue.SimpleQueue[_Worker | None] = queue.SimpleQueue()
        for _ in range(self.size):
            self._idle.put(None)  # a slot whose process starts when first needed
        self._threads = ThreadPoolExecutor(self.size, thread_name_prefix="agenttrain-scorer")

    def judge(self, job: Job, timeout_s: float) -> Verdict:
        worker = self._idle.get() or _Worker()
        healthy = False
        try:
            verdict = worker.run(job, timeout_s)
            healthy = True
            return verdict
        except TimeoutError:
            return Verdict(correct=False, extracted=None, note=f"scorer timed out after {timeout_s:g}s")
        except (EOFError, OSError) as exc:
            return Verdict(correct=False, extracted=None, note=f"scorer process died ({type(exc).__name__})")
        finally:
            if not healthy:  # it may still be busy on the item: replace it by a slot that starts afresh
                worker.stop()
            self._idle.put(worker if healthy else None)

    async def judge_async(self, job: Job, timeout_s: float) -> Verdict:
        return await asyncio.get_running_loop().run_in_executor(self._threads, self.judge, job, timeout_s)

    def judge_all(self, jobs: Sequence[Job], timeout_s: float) -> list[Verdict]:
        return list(self._threads.map(lambda job: self.judge(job, timeout_s), jobs))

    def close(self) -> None:
        self._threads.shutdown(wait=True)
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                return
            if worker is not None:
                worker.stop()

    def __enter__(self) -> JudgePool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_shared: JudgePool | None = None
_shared_lock = threading.Lock()


def _shared_pool() -> JudgePool:
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = JudgePool()
            atexit.register(_shared.close)
        return _shared


def _job(scorer: str, prediction: str | None, answer: str, fields: Mapping[str, Any] | None) -> Job:
    check_scorer(scorer)
    return scorer, prediction, answer, dict(fields or {})


async def judge_async(
    scorer: str,
    prediction: str | None,
    answer: str,
    fields: Mapping[str, Any] | None = None,
    timeout_s: float = 10.0,
) -> Verdict:
    """`judge` in a worker process; past `timeout_s` the item is wrong with a note. Never hangs."""
    return await _shared_pool().judge_async(_job(scorer, prediction, answer, fields), timeout_s)


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
