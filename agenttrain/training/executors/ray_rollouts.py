"""Rollouts on Ray: worker actors run the agent's conversation, its sandbox code and the scoring; the driver
keeps the journal, snapshots, optimizer, progress and the run's usage.

Each worker process keeps one LLM client and one sandbox pool across rollouts and runs up to
`executor.rollouts_per_worker` at once. The run's limits are not per worker: the request limit, the budget and
the response cache live in one ledger actor (ray_ledger.py), and the driver starts at most `llm.concurrency`
rollouts at a time. The workers are spread over the cluster's nodes; a task's attachments reach them through the
object store (ray_attachments.py). A worker that dies, alone or with its node, takes only its rollouts in flight
with it: the driver starts a replacement and runs them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import ray

from agenttrain.config import Experiment, LLMConfig
from agenttrain.endpoint.cache import ResponseCache
from agenttrain.endpoint.client import LLMClient
from agenttrain.endpoint.usage import Usage, UsageMeter
from agenttrain.errors import UserError
from agenttrain.functions import FunctionSet
from agenttrain.gather import run_all
from agenttrain.rundir.records import RolloutRecord
from agenttrain.scorers import judge_async
from agenttrain.tasks.base import AnswerFormat, Example, Task
from agenttrain.training.agent_setup import cache_endpoint, open_agent
from agenttrain.training.executors.base import RecordCallback
from agenttrain.training.executors.ray_attachments import Attachment, Inbox, Outbox
from agenttrain.training.executors.ray_cluster import cluster_cpus, ray_session
from agenttrain.training.executors.ray_ledger import (
    SharedCache,
    SharedLimiter,
    SharedMeter,
    remote_result,
    start_ledger,
)
from agenttrain.training.rollouts import solve_and_score

ATTEMPTS = 3  # runs of one rollout whose workers all died before it is given up
CLOSE_TIMEOUT_S = 30.0
LOGS = "/tmp/ray/session_latest/logs on the node"


class RolloutWorker:
    """One Ray worker process (an async actor): an agent with its own LLM client and sandbox pool."""

    def __init__(self, experiment: Experiment, endpoint: LLMConfig, answer_format: AnswerFormat, scorer: str,
                 ledger: ray.actor.ActorHandle, name: str, use_cache: bool, environment: dict[str, str]) -> None:
        # the process is this actor's alone; a runtime_env would do the same but cost a fresh worker start
        os.environ.update(environment)
        self.meter = SharedMeter(ledger, experiment)
        self.client = LLMClient(endpoint, role="agent", meter=self.meter,
                                cache=SharedCache(ledger) if use_cache else None,
                                cache_endpoint=cache_endpoint(experiment, "agent"), limiter=SharedLimiter(ledger, name))
        self.experiment = experiment
        self.answer_format = answer_format
        self.scorer = scorer
        self.resources = AsyncExitStack()
        self.inbox = Inbox()

    async def start(self) -> None:
        """Start the sandbox pool and the scorer's processes (an actor's constructor cannot await), so that the
        first rollout does not wait for them."""
        self.agent, _ = await self.resources.enter_async_context(
            open_agent(self.experiment, self.client, self.answer_format))
        await judge_async(self.scorer, None, "")

    async def solve(self, example: Example, functions: FunctionSet, attachments: tuple[Attachment, ...]
                    ) -> tuple[RolloutRecord, dict[str, Usage]]:
        """The scored record, and the usage this worker metered since its last answer."""
        here = await self.inbox.receive(example, attachments)
        record = await solve_and_score(self.agent, self.scorer, here, functions)
        return record, self.meter.take()

    async def close(self) -> None:
        await self.resources.aclose()
        await self.client.close()
        self.inbox.close()


def forwarded_environment(endpoint: LLMConfig) -> dict[str, str]:
    """The endpoint settings a worker reads from its environment: the API key variable and OPENAI_BASE_URL."""
    names = {endpoint.api_key_env, "OPENAI_BASE_URL"}
    return {name: os.environ[name] for name in names if name in os.environ}


class WorkerPool:
    """The worker actors and their free rollout slots. A worker that dies is replaced (once, whichever of its
    rollouts notices first) and each of its rollouts runs again on the replacement."""

    def __init__(self, experiment: Experiment, endpoint: LLMConfig, task: Task, ledger: ray.actor.ActorHandle,
                 use_cache: bool) -> None:
        settings = experiment.executor
        self.slots_per_worker = settings.rollouts_per_worker
        cpus = settings.num_cpus_per_rollout * self.slots_per_worker
        # spread over the nodes: the cluster's CPUs all serve, and a lost node takes few rollouts with it
        self.actor = ray.remote(RolloutWorker).options(num_cpus=cpus, max_concurrency=self.slots_per_worker + 1,
                                                       scheduling_strategy="SPREAD")
        self.arguments = (experiment, endpoint, task.answer_format, task.scorer, ledger)
        self.use_cache = use_cache
        self.environment = forwarded_environment(endpoint)
        self.ledger = ledger
        self.concurrency = endpoint.concurrency
        self.size = worker_count(self.concurrency, self.slots_per_worker, cpus)
        self.workers: list[Any] = [None] * self.size
        self.names = [""] * self.size  # the ledger's name for each worker's request slots
        self.free: asyncio.Queue[int] = asyncio.Queue()  # a worker's index once per rollout it can take
        self.spawned = 0
        self.replacing = [asyncio.Lock() for _ in range(self.size)]

    async def start(self) -> None:
        await asyncio.gather(*(self._spawn(index) for index in range(self.size)))
        # `llm.concurrency` rollouts at once in all, as the local executor runs, spread over the workers
        slots = [index for _ in range(self.slots_per_worker) for index in range(self.size)]
        for index in slots[:self.concurrency]:
            self.free.put_nowait(index)

    async def _spawn(self, index: int) -> None:
        for attempt in range(1, ATTEMPTS + 1):
            self.spawned += 1
            name = f"worker-{self.spawned}"
            worker: Any = self.actor.remote(*self.arguments, name, self.use_cache, self.environment)
            self.workers[index], self.names[index] = worker, name
            try:
                await remote_result(worker.start.remote())
                return
            except ray.exceptions.RayActorError as exc:
                # a node lost a moment ago may still be offered to the next worker: that one dies at once too
                if attempt == ATTEMPTS:
                    raise UserError(f"a Ray worker died while starting ({exc.__class__.__name__}), {ATTEMPTS} times; "
                                    f"see the Ray logs ({LOGS}) and the worker node's requirements in the README"
                                    ) from None

    async def solve(self, example: Example, functions: ray.ObjectRef, attachments: tuple[Attachment, ...]
                    ) -> tuple[RolloutRecord, dict[str, Usage]]:
        for _ in range(ATTEMPTS):
            index = await self.free.get()
            worker = self.workers[index]
            try:
                return await remote_result(worker.solve.remote(example, functions, attachments))
            except ray.exceptions.RayActorError:
                await self._replace(index, worker)
            finally:
                self.free.put_nowait(index)
        raise UserError(f"rollout of task {example.id!r}: its Ray worker died {ATTEMPTS} times (out of memory, or "
                        f"a node lost?); see the Ray logs ({LOGS}), then continue with --resume")

    async def _replace(self, index: int, dead: Any) -> None:
        async with self.replacing[index]:
            if self.workers[index] is not dead:  # another rollout of that worker replaced it already
                return
            await remote_result(self.ledger.forget.remote(self.names[index]))
            ray.kill(dead, no_restart=True)
            await self._spawn(index)

    async def close(self) -> None:
        """Let each worker close its sandbox pool and client, then end the processes (and any that hang)."""
        workers = [worker for worker in self.workers if worker is not None]
        await wait_quietly([worker.close.remote() for worker in workers])
        for worker in workers:
            ray.kill(worker, no_restart=True)


async def wait_quietly(calls: list[ray.ObjectRef]) -> None:
    """Wait up to CLOSE_TIMEOUT_S for calls made while shutting down; their errors no longer matter."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), CLOSE_TIMEOUT_S)


def worker_count(concurrency: int, rollouts_per_worker: int, cpus_per_worker: float) -> int:
    """Enough workers for `llm.concurrency` rollouts at once, as far as the cluster's CPUs go."""
    wanted = math.ceil(concurrency / rollouts_per_worker)
    available = cluster_cpus()
    fit = int(available // cpus_per_worker)
    if fit < 1:
        raise UserError(
            f"a Ray worker needs executor.num_cpus_per_rollout x executor.rollouts_per_worker = {cpus_per_worker:g} "
            f"CPUs but the cluster has {available:g}; lower executor.num_cpus_per_rollout")
    return min(wanted, fit)


class RayExecutor:
    """The `RolloutExecutor` on Ray; the driver side of the workers."""

    def __init__(self, pool: WorkerPool, ledger: ray.actor.ActorHandle, meter: UsageMeter) -> None:
        self.pool = pool
        self.ledger = ledger
        self.meter = meter
        self.outbox = Outbox()

    async def run(
        self,
        examples: Sequence[Example],
        functions: FunctionSet,
        on_record: RecordCallback | None = None,
        done: dict[str, RolloutRecord] | None = None,
    ) -> list[RolloutRecord]:
        done = done or {}
        # the budget counts everything the run has spent so far, the optimizer's requests included
        spent = {role: usage.to_dict() for role, usage in self.meter.by_role().items()}
        await remote_result(self.ledger.restore.remote(spent))
        shared = ray.put(functions)
        attachments = {e.id: self.outbox.ship(e) for e in examples if e.id not in done}

        async def one(example: Example) -> RolloutRecord:
            if example.id in done:
                return done[example.id]
            record, usage = await self.pool.solve(example, shared, attachments[example.id])
            self.meter.add(usage)
            if on_record:
                on_record(record)
            return record

        return await run_all(one(e) for e in examples)


def cache_folder(experiment: Experiment, use_cache: bool) -> Path | None:
    """The cache file's folder as the driver sees it (absolute: the ledger runs in another working directory)."""
    if not (use_cache and experiment.llm.cache):
        return None
    return Path(experiment.llm.cache_dir or ResponseCache.default_dir()).resolve()


@asynccontextmanager
async def open_ray_executor(
    experiment: Experiment, task: Task, endpoint: LLMConfig, meter: UsageMeter, use_cache: bool
) -> AsyncIterator[RayExecutor]:
    """`endpoint`: the agent's, as the driver resolved it (an embedded local server is reachable from workers on
    this machine only)."""
    with ray_session(experiment.executor.address):
        ledger = start_ledger(experiment, endpoint, cache_folder(experiment, use_cache))
        pool = WorkerPool(experiment, endpoint, task, ledger, use_cache)
        try:
            await pool.start()
            yield RayExecutor(pool, ledger, meter)
        finally:
            await pool.close()
            await wait_quietly([ledger.close.remote()])
            ray.kill(ledger, no_restart=True)
