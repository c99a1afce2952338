"""The Ray executor against the local one, on this machine, with the tests' fake server in a child process.

1. overhead per rollout: one rollout at a time (llm.concurrency 1: one worker), an endpoint that answers at
   once, so the difference in time per rollout is what Ray adds (dispatch to the worker, the ledger's calls
   for each request, the record back to the driver); compared with an LLM round trip;
2. scale-out: N workers, each with its own logical CPU and one rollout at a time, against an endpoint of fixed
   latency that serves at most ENDPOINT_SLOTS requests at once: rollouts/s against N.

The executor is driven as the trainer drives it (`runtime.executor.run` on the training split), twice per
setting: the first pass starts the workers' lazy parts (the HTTP client's first connection and imports, the
first calls to the ledger), the second is timed. Each rollout is one request.
Run: .venv/bin/python bench/bench_ray.py
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import ray
from bench_training import PROBLEMS, write_config

from agenttrain.config import load_experiment
from agenttrain.functions import FunctionSet
from agenttrain.training.runtime import open_runtime
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.scripted import multiplying_agent

LATENCY_S = 1.0  # the simulated endpoint's time per request in the scale-out figure: an LLM round trip
ENDPOINT_SLOTS = 8  # requests the simulated endpoint serves at once; more wait in its queue
WORKERS = (1, 2, 4, 8, 12)
TYPICAL_ROUND_TRIP_S = 1.0  # a short chat completion from a hosted model, for scale


def _serve(connection: Connection, latency_s: float, slots: int) -> None:
    """Child process: a fake endpoint that handles `slots` requests at a time, each taking `latency_s`."""
    limit = threading.Semaphore(slots)

    def respond(body: dict[str, Any]) -> Reply:
        with limit:
            time.sleep(latency_s)
            return multiplying_agent(body)

    with FakeOpenAI(respond) as server:
        connection.send(server.base_url)
        connection.recv()


class Endpoint:
    def __init__(self, latency_s: float, slots: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, latency_s, slots), daemon=True)

    def __enter__(self) -> str:
        self._process.start()
        return self._connection.recv()

    def __exit__(self, *exc: object) -> None:
        self._connection.send("stop")
        self._process.join(timeout=10)


def timed_pass(config: Path, overrides: list[str]) -> tuple[float, float]:
    """Seconds for a cold pass and a warm pass of the training split through the configured executor."""
    experiment = load_experiment(config, overrides)

    async def passes() -> tuple[float, float]:
        async with open_runtime(experiment, config.parent, use_cache=False) as runtime:
            examples = runtime.task.splits().train
            seconds = []
            for _ in range(2):
                started = time.monotonic()
                await runtime.executor.run(examples, FunctionSet())
                seconds.append(time.monotonic() - started)
        return seconds[0], seconds[1]

    return asyncio.run(passes())


def on_ray(workers: int) -> list[str]:
    return ["executor.kind=ray", "executor.num_cpus_per_rollout=1", f"llm.concurrency={workers}"]


def bench_overhead(root: Path) -> float:
    """Milliseconds Ray adds to one rollout."""
    with Endpoint(0.0, 1) as base_url:
        config = write_config(root / "overhead", base_url, concurrency=1, cache=False)
        _, local = timed_pass(config, [])
        _, remote = timed_pass(config, on_ray(1))
    per_local, per_ray = local / len(PROBLEMS) * 1000, remote / len(PROBLEMS) * 1000
    overhead = per_ray - per_local
    print(f"1. one rollout at a time, {len(PROBLEMS)} rollouts, an endpoint answering at once:")
    print(f"   local {per_local:6.1f} ms per rollout; ray {per_ray:6.1f} ms; Ray adds {overhead:.1f} ms "
          f"({overhead / (TYPICAL_ROUND_TRIP_S * 1000):.1%} of a {TYPICAL_ROUND_TRIP_S:g} s LLM round trip)")
    return overhead


def bench_scale_out(root: Path) -> list[tuple[str, float, float]]:
    print(f"2. {len(PROBLEMS)} rollouts, endpoint {LATENCY_S * 1000:.0f} ms per request, {ENDPOINT_SLOTS} at once "
          f"(ideal: N / {LATENCY_S:g} s up to {ENDPOINT_SLOTS / LATENCY_S:.0f} rollouts/s); warm pass, and the "
          "first (cold) pass:")
    rows = []
    with Endpoint(LATENCY_S, ENDPOINT_SLOTS) as base_url:
        config = write_config(root / "scale", base_url, concurrency=1, cache=False)
        cold, warm = timed_pass(config, [f"llm.concurrency={ENDPOINT_SLOTS}"])
        print(f"   local, concurrency {ENDPOINT_SLOTS}: {len(PROBLEMS) / warm:6.1f} rollouts/s (cold "
              f"{len(PROBLEMS) / cold:.1f})")
        for workers in WORKERS:
            cold, warm = timed_pass(config, on_ray(workers))
            rate, ideal = len(PROBLEMS) / warm, min(workers, ENDPOINT_SLOTS) / LATENCY_S
            print(f"   ray, {workers:2d} workers: {rate:6.1f} rollouts/s  ({rate / ideal:.0%} of ideal; cold "
                  f"{len(PROBLEMS) / cold:.1f})")
            rows.append((f"{workers} workers", rate, rate / ideal))
    return rows


def main() -> None:
    ray.init(num_cpus=max(WORKERS), include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level=logging.WARNING)
    try:
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder)
            overhead = bench_overhead(root)
            rows = bench_scale_out(root)
    finally:
        ray.shutdown()
    print(f"\n{'summary':40} {'measured':>12}")
    print(f"{'Ray overhead per rollout':40} {overhead:9.1f} ms")
    for name, rate, share in rows:
        print(f"{'rollouts/s, ' + name:40} {rate:12.1f}  ({share:.0%} of ideal)")


if __name__ == "__main__":
    main()
