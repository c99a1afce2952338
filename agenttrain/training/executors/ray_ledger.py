"""The run's accounts shared by every Ray worker: one actor serves the response cache, the limit on requests in
flight and the budget, so that they hold for the run as a whole and not per worker.

The driver refreshes the ledger's spending before each batch of rollouts; each worker's LLM client holds the
three proxies below in its cache, limiter and meter slots. The actor is placed on the driver's node, so it opens
the same cache file as the driver's own (optimizer) client. When the run is a sweep's job, the actor joins the
sweep's ledger on the job's behalf (endpoint.shared_limits): its request slots are the sweep's, and what the workers
spend counts against the sweep's budget.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from agenttrain.config import BudgetConfig, Experiment, LLMConfig
from agenttrain.endpoint.cache import ResponseCache
from agenttrain.endpoint.client import AdaptiveLimiter, RequestLimiter
from agenttrain.endpoint.shared_limits import LedgerAddress, endpoint_key, join, joined
from agenttrain.endpoint.usage import BudgetExhausted, Usage, UsageMeter
from agenttrain.errors import UserError


@dataclass(frozen=True)
class SweepSeat:
    """How a run's ledger joins the sweep its driver is a job of."""

    address: LedgerAddress
    job: str
    endpoint: str  # what the sweep calls the agent's endpoint, as the driver resolved it


class Ledger:
    """Runs as an async actor: `admit` waits for a free request slot without blocking the other calls."""

    def __init__(self, experiment: Experiment, concurrency: int, cache_dir: Path | None, sweep: SweepSeat | None
                 ) -> None:
        # this process is the ledger's alone; the workers' meters already warn about a model without a price
        logging.getLogger("agenttrain.endpoint.usage").setLevel(logging.ERROR)
        self.meter = UsageMeter(experiment.budget, experiment.prices())
        self.cache = ResponseCache(cache_dir) if cache_dir is not None else None
        # the agent's llm.concurrency for all workers together; in a sweep, the sweep's slots for all its jobs
        self.limiter: RequestLimiter = (AdaptiveLimiter(concurrency) if sweep is None
                                        else join(sweep.address, sweep.job).slots(sweep.endpoint, concurrency))
        self.leases: Counter[str] = Counter()  # request slots each worker holds, given back if it dies

    def restore(self, by_role: dict[str, dict[str, Any]]) -> None:
        self.meter.restore(by_role)

    def lookup(self, key: str) -> dict[str, Any] | None:
        return self.cache.get(key) if self.cache else None

    def store(self, key: str, value: dict[str, Any]) -> None:
        if self.cache:
            self.cache.put(key, value)

    def record(self, *args: Any, **kwargs: Any) -> None:
        self.meter.record(*args, **kwargs)

    async def admit(self, worker: str) -> int:
        """A request slot for `worker`, once the budget allows another request; returns the limiter generation."""
        generation = await self.limiter.__aenter__()
        self.leases[worker] += 1
        try:
            self.meter.check_budget()
        except BudgetExhausted:
            await self.release(worker)
            raise
        return generation

    async def release(self, worker: str) -> None:
        if self.leases[worker] > 0:
            self.leases[worker] -= 1
            await self.limiter.__aexit__()

    async def forget(self, worker: str) -> None:
        """`worker` died: the slots of its requests in flight are free again."""
        while self.leases[worker]:
            await self.release(worker)

    def succeeded(self) -> None:
        self.limiter.on_success()

    def rate_limited(self, generation: int, retry_after_s: float | None) -> None:
        self.limiter.on_rate_limit(generation, retry_after_s)

    def close(self) -> None:
        if self.cache:
            self.cache.close()


def start_ledger(experiment: Experiment, endpoint: LLMConfig, cache_dir: Path | None) -> Any:
    """The ledger actor's handle, on this (the driver's) node."""
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    actor = ray.remote(Ledger).options(num_cpus=0, max_concurrency=10_000, scheduling_strategy=here)
    return actor.remote(experiment, endpoint.concurrency, cache_dir, sweep_seat(experiment, endpoint))


def sweep_seat(experiment: Experiment, endpoint: LLMConfig) -> SweepSeat | None:
    """The sweep this driver is a job of, if any. Its ledger listens on this machine (or on TCP for Ray sweeps),
    which a run's ledger placed on the head node by Ray Client may not reach."""
    link = joined()
    if link is None:
        return None
    if link.address.kind == "unix" and (experiment.executor.address or "").startswith("ray://"):
        raise UserError("a local sweep's limits cannot reach a run on Ray Client (executor.address: ray://...): run "
                        "the sweep on a node of the cluster with executor.address: auto")
    return SweepSeat(link.address, link.job, endpoint_key(endpoint))


async def remote_result(ref: ray.ObjectRef) -> Any:
    """Await an actor call; an exception raised there is raised here as itself (BudgetExhausted, EndpointDown)."""
    try:
        return await ref
    except ray.exceptions.RayTaskError as exc:
        raise exc.cause from None


class SharedCache:
    """The ledger's response cache, as the LLM client's `cache` (a `ReplyStore`)."""

    def __init__(self, ledger: ray.actor.ActorHandle) -> None:
        self.ledger = ledger

    async def lookup(self, key: str) -> dict[str, Any] | None:
        return await remote_result(self.ledger.lookup.remote(key))

    async def store(self, key: str, value: dict[str, Any]) -> None:
        await remote_result(self.ledger.store.remote(key, value))


class SharedLimiter:
    """The ledger's request slots, as the LLM client's limiter; admission also checks the run's budget."""

    def __init__(self, ledger: ray.actor.ActorHandle, worker: str) -> None:
        self.ledger = ledger
        self.worker = worker

    async def __aenter__(self) -> int:
        return await remote_result(self.ledger.admit.remote(self.worker))

    async def __aexit__(self, *exc: object) -> None:
        self.ledger.release.remote(self.worker)

    def on_success(self) -> None:
        self.ledger.succeeded.remote()

    def on_rate_limit(self, generation: int, retry_after_s: float | None = None) -> None:
        self.ledger.rate_limited.remote(generation, retry_after_s)


class SharedMeter(UsageMeter):
    """A worker's meter: counts here, so each record goes back with the usage behind it, and tells the ledger,
    which keeps the budget (this meter has none of its own)."""

    def __init__(self, ledger: ray.actor.ActorHandle, experiment: Experiment) -> None:
        super().__init__(BudgetConfig(), experiment.prices())
        self.ledger = ledger
        self._taken: dict[str, Usage] = {}

    def record(self, *args: Any, **kwargs: Any) -> None:
        super().record(*args, **kwargs)
        self.ledger.record.remote(*args, **kwargs)

    def take(self) -> dict[str, Usage]:
        """Usage since the last `take`, per role."""
        now = self.by_role()
        delta = {role: usage - self._taken.get(role, Usage()) for role, usage in now.items()}
        self._taken = now
        return delta
