"""The Ray executor against the local one, on this machine, with the tests' fake server in a child process.

1. overhead per rollout: one rollout at a time (llm.concurrency 1: one worker), an endpoint that answers at
   once, so the difference in epoch time per rollout is what Ray adds (task dispatch, the ledger's calls for
   each request, records back to the driver); compared with an LLM round trip;
2. scale-out: N workers, each with its own logical CPU and one rollout at a time, against an endpoint of fixed
   latency that serves at most ENDPOINT_SLOTS requests at once: rollouts/s against N.

Every run is a baseline epoch only; each rollout is one request. Times are the trainer's epoch duration, so the
workers' start-up (seconds each) is not counted. Run: .venv/bin/python bench/bench_ray.py
"""

from __future__ import annotations

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

from agenttrain import api
from tests.fake_openai import FakeOpenAI, Reply
from tests.scripted import multiplying_agent

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


def epoch_seconds(config: Path, overrides: list[str]) -> float:
    outcome = api.train(config, overrides)
    if outcome.status != "finished":
        raise RuntimeError(f"{outcome.run.path}: ended {outcome.status}")
    return outcome.run.snapshot(0).metrics.duration_s


def on_ray(workers: int) -> list[str]:
    return ["executor.kind=ray", "executor.num_cpus_per_rollout=1", f"llm.concurrency={workers}"]


def bench_overhead(root: Path) -> float:
    """Milliseconds Ray adds to one rollout."""
    with Endpoint(0.0, 1) as base_url:
        config = write_config(root / "overhead", base_url, concurrency=1, cache=False)
        epoch_seconds(config, [])  # warm-up: the scorer processes start here, not in a timed run
        local = epoch_seconds(config, [])
        remote = epoch_seconds(config, on_ray(1))
    per_local, per_ray = local / len(PROBLEMS) * 1000, remote / len(PROBLEMS) * 1000
    overhead = per_ray - per_local
    print(f"1. one rollout at a time, {len(PROBLEMS)} rollouts, an endpoint answering at once:")
    print(f"   local {per_local:6.1f} ms per rollout; ray {per_ray:6.1f} ms; Ray adds {overhead:.1f} ms "
          f"({overhead / (TYPICAL_ROUND_TRIP_S * 1000):.1%} of a {TYPICAL_ROUND_TRIP_S:g} s LLM round trip)")
    return overhead


def bench_scale_out(root: Path) -> list[tuple[str, float]]:
    print(f"2. {len(PROBLEMS)} rollouts, endpoint {LATENCY_S * 1000:.0f} ms per request, {ENDPOINT_SLOTS} at once "
          f"(ideal: N / {LATENCY_S:g} s up to {ENDPOINT_SLOTS / LATENCY_S:.0f} rollouts/s):")
    rows = []
    with Endpoint(LATENCY_S, ENDPOINT_SLOTS) as base_url:
        config = write_config(root / "scale", base_url, concurrency=1, cache=False)
        local = len(PROBLEMS) / epoch_seconds(config, [f"llm.concurrency={ENDPOINT_SLOTS}"])
        print(f"   local, concurrency {ENDPOINT_SLOTS}: {local:6.1f} rollouts/s")
        for workers in WORKERS:
            rate = len(PROBLEMS) / epoch_seconds(config, on_ray(workers))
            ideal = min(workers, ENDPOINT_SLOTS) / LATENCY_S
            print(f"   ray, {workers:2d} workers: {rate:6.1f} rollouts/s  ({rate / ideal:.0%} of ideal)")
            rows.append((f"{workers} workers", rate))
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
    for name, rate in rows:
        print(f"{'rollouts/s, ' + name:40} {rate:12.1f}")


if __name__ == "__main__":
    main()
