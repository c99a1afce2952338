"""Training-loop figures on a synthetic 48-problem MATH task against the tests' fake server (200 ms per request).

1. epoch wall time at llm.concurrency 16 versus 1, and the speedup;
2. the training process's own CPU time per LLM call;
3. requests made by an identical rerun with the cache on (the invariant: 0);
4. requests repeated after a SIGKILL mid-epoch and `train --resume` (the invariant: 0), and the rollouts
   in flight at the kill (an upper bound on the work lost).

Every run is a baseline epoch only (`optimizer.epochs: 0`): the scripted agent answers each problem in one
request, so requests = rollouts. The fake server runs in a child process: see `ServerProcess`.
Run: .venv/bin/python bench/bench_training.py
"""

from __future__ import annotations

import multiprocessing
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.*

from agenttrain import api
from agenttrain.runs import RunDir
from agenttrain.scorers import judge_many
from tests.conftest import write_problems
from tests.fake_openai import FakeOpenAI
from tests.scripted import multiplying_agent, question
from tests.test_resume import CLI, start_training, wait_for_rollouts

PROBLEMS = [(f"What is {a} times 3?", str(a * 3)) for a in range(2, 50)]
LATENCY_S = 0.2
CONCURRENT, RESUME_CONCURRENCY = 16, 4


def _serve(connection: Connection, latency_s: float) -> None:
    """Child process: run the fake server; on "take", send the questions asked since the last take."""
    with FakeOpenAI(multiplying_agent, latency_s=latency_s) as server:
        connection.send(server.base_url)
        while connection.recv() == "take":
            # handler threads only append, so slicing off the first n bodies never loses a newer one
            count = len(server.requests)
            taken = server.requests[:count]
            del server.requests[:count]
            connection.send([question(body) for body in taken])


class ServerProcess:
    """FakeOpenAI in a child process, so that `time.process_time()` here counts only the training side.

    In-process, the server's handler threads (JSON parsing, HTTP writing) would be billed to us, and they
    cannot be told apart from our own threads (asyncio.to_thread, the scorer's pipe threads) afterwards.
    """

    def __init__(self, latency_s: float) -> None:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited threads or state
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, latency_s), daemon=True)
        self.base_url = ""

    def __enter__(self) -> ServerProcess:
        self._process.start()
        self.base_url = self._connection.recv()
        return self

    def __exit__(self, *exc: object) -> None:
        self._connection.send("stop")
        self._process.join(timeout=10)

    def take_asked(self) -> list[str]:
        """The question of each request received since the last call (one request per agent turn)."""
        self._connection.send("take")
        return self._connection.recv()


def write_config(folder: Path, base_url: str, *, concurrency: int, cache: bool) -> Path:
    """A baseline-only experiment whose runs and cache stay in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "name": "bench",
        "task": {"name": "math", "path": str(write_problems(folder / "problems.jsonl", PROBLEMS)),
                 "train_size": len(PROBLEMS), "test_size": 0},
        "agent": {"model": "agent-model", "max_turns": 4},
        "optimizer": {"model": "optimizer-model", "epochs": 0},
        "llm": {"base_url": base_url, "concurrency": concurrency, "cache": cache,
                "cache_dir": str(folder / "cache"), "max_retries": 0,
                "prices": {"agent-model": {"input": 0.0, "output": 0.0}}},  # no "unpriced model" warning
        "sandbox": {"warm_workers": 0},  # the scripted agent never runs code: no idle workers competing for 2 cores
        "output_dir": str(folder / "runs"),
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@dataclass
class TimedRun:
    epoch_s: float  # the trainer's own epoch-0 duration (metrics.json)
    # process CPU time of the whole api.train call (setup and snapshot included), all of this process's
    # threads; the scorer's worker processes and the fake server's process are not counted
    cpu_s: float
    requests: int

    @property
    def cpu_ms_per_call(self) -> float:
        return self.cpu_s * 1000 / self.requests


def timed_train(config: Path, server: ServerProcess) -> TimedRun:
    server.take_asked()  # forget earlier runs' requests
    cpu = time.process_time()
    outcome = api.train(config)
    cpu_s = time.process_time() - cpu
    if outcome.status != "finished":
        raise RuntimeError(f"{outcome.run.path}: ended {outcome.status}")
    return TimedRun(outcome.run.snapshot(0).metrics.duration_s, cpu_s, len(server.take_asked()))


def bench_concurrency(root: Path, server: ServerProcess) -> tuple[TimedRun, TimedRun]:
    # start the scorer processes now: otherwise the first timed run alone would pay for their start
    judge_many("math", [{"prediction": "\\boxed{1}", "answer": "1"}] * 2)
    sequential = timed_train(write_config(root / "c1", server.base_url, concurrency=1, cache=False), server)
    concurrent = timed_train(write_config(root / "c16", server.base_url, concurrency=CONCURRENT, cache=False), server)
    print(f"1. epoch of {len(PROBLEMS)} rollouts, {LATENCY_S * 1000:.0f} ms per request, cache off:")
    print(f"   concurrency  1: {sequential.epoch_s:6.2f} s   ({sequential.requests} requests)")
    print(f"   concurrency {CONCURRENT}: {concurrent.epoch_s:6.2f} s   ({concurrent.requests} requests)")
    print(f"   speedup: {sequential.epoch_s / concurrent.epoch_s:.1f}x (ideal {CONCURRENT}x)")
    print("2. training-process CPU per LLM call (whole train call / requests; server in another process):")
    for name, run in (("concurrency  1", sequential), (f"concurrency {CONCURRENT}", concurrent)):
        print(f"   {name}: {run.cpu_ms_per_call:6.2f} ms  ({run.cpu_s:.2f} s / {run.requests})")
    return sequential, concurrent


def bench_cached_rerun(root: Path, server: ServerProcess) -> int:
    config = write_config(root / "cached", server.base_url, concurrency=CONCURRENT, cache=True)
    first = timed_train(config, server)
    rerun = timed_train(config, server)
    print(f"3. identical rerun with the cache on: first run {first.requests} requests, rerun {rerun.requests}")
    return rerun.requests


def bench_kill_and_resume(root: Path, server: ServerProcess) -> tuple[int, int]:
    """Returns (requests repeated for journaled tasks, rollouts in flight at the kill)."""
    config = write_config(root / "killed", server.base_url, concurrency=RESUME_CONCURRENCY, cache=False)
    server.take_asked()
    process = start_training(config)
    try:
        run = wait_for_rollouts(root / "killed" / "runs", len(PROBLEMS) // 2)
    finally:
        process.send_signal(signal.SIGKILL)  # no chance to clean up, as in a crash or an OOM kill
        process.wait(timeout=10)
        process.stderr.close()
    time.sleep(0.1)  # let the server read any request the killed process had already written to its socket
    journaled = {e["record"]["question"] for e in run.events() if e["event"] == "rollout"}
    in_flight = len(set(server.take_asked()) - journaled)  # started, never journaled: the work the kill lost

    resumed = subprocess.run([*CLI, "train", "--resume", str(run.path)], capture_output=True, text=True, timeout=60)
    if resumed.returncode != 0 or RunDir(run.path).info().status != "finished":
        raise RuntimeError(f"resume failed: {resumed.stderr}")
    asked_again = server.take_asked()
    repeated = sum(q in journaled for q in asked_again)
    print(f"4. SIGKILL at {len(journaled)}/{len(PROBLEMS)} rollouts journaled (concurrency {RESUME_CONCURRENCY}), "
          f"then train --resume:")
    print(f"   in flight at the kill: {in_flight}; resume sent {len(asked_again)} requests, "
          f"{repeated} of them for journaled tasks")
    return repeated, in_flight


def main() -> None:
    with tempfile.TemporaryDirectory() as folder, ServerProcess(LATENCY_S) as server:
        root = Path(folder)
        sequential, concurrent = bench_concurrency(root, server)
        rerun_requests = bench_cached_rerun(root, server)
        repeated, in_flight = bench_kill_and_resume(root, server)
    rows = [
        ("epoch wall time, concurrency 1", f"{sequential.epoch_s:.2f} s", ""),
        (f"epoch wall time, concurrency {CONCURRENT}", f"{concurrent.epoch_s:.2f} s", ""),
        ("speedup", f"{sequential.epoch_s / concurrent.epoch_s:.1f}x", ">= 10x"),
        (f"CPU per LLM call (concurrency {CONCURRENT})", f"{concurrent.cpu_ms_per_call:.2f} ms", ""),
        ("requests of a cached identical rerun", str(rerun_requests), "0"),
        ("requests repeated after SIGKILL + resume", str(repeated), "0"),
        ("rollouts in flight at the kill", str(in_flight), f"<= {RESUME_CONCURRENCY}"),
    ]
    print(f"\n{'summary':44} {'measured':>10}  target")
    for name, value, target in rows:
        print(f"{name:44} {value:>10}  {target}".rstrip())


if __name__ == "__main__":
    main()
