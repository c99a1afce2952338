"""Training-loop figures on a realistic workload, against the tests' fake server (200 ms per request).

The workload: 48 MATH-style problems, multi-turn. In epoch 0 a third of the rollouts run a code block before
answering (the rest guess); the optimizer then adds a learned function, and in epoch 1 every rollout calls it
(a third after their code block). `llm.concurrency: 16`.

1. wall time of the whole `agenttrain train` command against the sequential LLM time of the same requests
   (requests x 200 ms), and the speedup;
2. CPU time of every process the command starts (trainer, fork server, sandbox sessions, scorer workers)
   per rollout, from a cgroup (see cpu_cgroup.py);
3. requests made by an identical rerun with the cache on (the invariant: 0);
4. requests repeated after a SIGKILL mid-epoch and `train --resume` (the invariant: 0), and the rollouts
   in flight at the kill (an upper bound on the work lost).

The fake server runs in a child process outside the measured cgroup: see `ServerProcess`.
Run: .venv/bin/python bench/bench_training.py
"""

from __future__ import annotations

import json
import multiprocessing
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import yaml

sys.path.append(str(Path(__file__).resolve().parent))  # for cpu_cgroup
sys.path.append(str(Path(__file__).resolve().parents[1]))  # for tests.*

from cpu_cgroup import CpuCgroup

from agenttrain.rundir.directory import RunDir, find_runs
from tests.support.fake_openai import FakeOpenAI, Reply, tool_call
from tests.support.files import write_problems
from tests.support.scripted import MULTIPLY, TERMINATE, add, boxed, is_optimizer, numbers, offered_tools, question
from tests.test_resume import CLI, wait_for_rollouts

PROBLEMS = [(f"What is {a} times 3?", str(a * 3)) for a in range(2, 50)]
LATENCY_S = 0.2
CONCURRENT, RESUME_CONCURRENCY = 16, 4
EPOCHS = 1  # epoch 0 (baseline) and epoch 1 (with the learned function)
CODE_EVERY = 3  # every third problem runs a code block


def realistic_world(body: dict[str, Any]) -> Reply:
    """The optimizer adds `multiply`, then ends its step (as a real one does once its edit is made, instead of
    repeating an action that would be refused); the agent runs code for a third of the problems, calls
    `multiply` whenever it is offered, and answers right only after one of the two."""
    if is_optimizer(body):
        return TERMINATE if "def multiply" in json.dumps(body["messages"]) else add("multiply", MULTIPLY)
    a = numbers(question(body))[0]
    said = [str(m.get("content") or "") for m in body["messages"] if m["role"] == "assistant"]
    ran_code = any("```python" in text for text in said)
    called = any(m["role"] == "tool" for m in body["messages"])
    if a % CODE_EVERY == 0 and not ran_code:
        return Reply(content=f"Let me compute.\n```python\nimport sympy\nprint(sympy.Integer({a}) * 3)\n```")
    if "multiply" in offered_tools(body) and not called:
        return tool_call("multiply", {"a": a, "b": 3})
    return boxed(a * 3 if ran_code or called else 0)


def _serve(connection: Connection, latency_s: float) -> None:
    """Child process: run the fake server; on "take", send the questions asked since the last take."""
    with FakeOpenAI(realistic_world, latency_s=latency_s) as server:
        connection.send(server.base_url)
        while connection.recv() == "take":
            # handler threads only append, so slicing off the first n bodies never loses a newer one
            count = len(server.requests)
            taken = server.requests[:count]
            del server.requests[:count]
            connection.send([question(body) for body in taken])


class ServerProcess:
    """FakeOpenAI in a child process, so that its CPU is not counted with the training side's."""

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


def write_config(folder: Path, base_url: str, *, concurrency: int, cache: bool, epochs: int = EPOCHS) -> Path:
    """The realistic experiment, with its runs and cache in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "name": "bench",
        "task": {"name": "math", "path": str(write_problems(folder / "problems.jsonl", PROBLEMS)),
                 "train_size": len(PROBLEMS), "test_size": 0},
        "agent": {"model": "agent-model", "max_turns": 4},
        "optimizer": {"model": "optimizer-model", "epochs": epochs},
        "llm": {"base_url": base_url, "concurrency": concurrency, "cache": cache,
                "cache_dir": str(folder / "cache"), "max_retries": 0,
                "prices": {m: {"input": 0.0, "output": 0.0} for m in ("agent-model", "optimizer-model")}},
        "output_dir": str(folder / "runs"),
    }  # fmt: skip
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@dataclass
class TimedRun:
    wall_s: float  # the whole command, start-up included
    epochs_s: list[float]  # each epoch's own duration (metrics.json)
    cpu_s: float  # every process the command started
    requests: int
    rollouts: int

    @property
    def sequential_llm_s(self) -> float:
        return self.requests * LATENCY_S


def timed_train(config: Path, server: ServerProcess) -> TimedRun:
    """`agenttrain train` in a fresh cgroup, so that its CPU counts every process it starts."""
    server.take_asked()  # forget earlier runs' requests
    cpu = CpuCgroup(f"agenttrain-bench-training-{config.parent.name}")
    started = time.perf_counter()
    finished = subprocess.run([*CLI, "train", str(config)], capture_output=True, text=True, cwd=config.parent,
                              preexec_fn=cpu.join)  # fmt: skip
    wall_s, cpu_s = time.perf_counter() - started, cpu.cpu_s()
    cpu.close()
    (path,) = find_runs(config.parent / "runs")
    run = RunDir(path)
    if finished.returncode != 0 or run.info().status != "finished":
        raise RuntimeError(f"{path}: ended {run.info().status}: {finished.stderr[-2000:]}")
    rollouts = sum(e["event"] == "rollout" for e in run.events())
    epochs_s = [run.snapshot(epoch).metrics.duration_s for epoch in run.epochs()]
    return TimedRun(wall_s, epochs_s, cpu_s, len(server.take_asked()), rollouts)


def bench_workload(root: Path, server: ServerProcess) -> TimedRun:
    run = timed_train(write_config(root / "c16", server.base_url, concurrency=CONCURRENT, cache=False), server)
    print(f"1. {len(PROBLEMS)} problems, {EPOCHS + 1} epochs, {LATENCY_S * 1000:.0f} ms per request, "
          f"concurrency {CONCURRENT}, cache off:")
    print(f"   {run.requests} requests, {run.rollouts} rollouts; sequential LLM time {run.sequential_llm_s:.1f} s; "
          f"train command {run.wall_s:.1f} s: speedup {run.sequential_llm_s / run.wall_s:.1f}x")
    print(f"   epochs: {', '.join(f'{s:.1f} s' for s in run.epochs_s)}; the rest is start-up, optimizer and snapshots")
    print(f"2. CPU of every process started: {run.cpu_s:.1f} s, {run.cpu_s * 1000 / run.rollouts:.0f} ms per rollout")
    return run


def bench_cached_rerun(root: Path, server: ServerProcess) -> int:
    config = write_config(root / "cached", server.base_url, concurrency=CONCURRENT, cache=True)
    first = timed_train(config, server)
    for path in find_runs(config.parent / "runs"):
        subprocess.run(["rm", "-r", str(path)], check=True)  # timed_train reads the one run in the folder
    rerun = timed_train(config, server)
    print(f"3. identical rerun with the cache on: first run {first.requests} requests, rerun {rerun.requests}")
    return rerun.requests


def bench_kill_and_resume(root: Path, server: ServerProcess) -> tuple[int, int]:
    """Returns (requests repeated for journaled tasks, rollouts in flight at the kill)."""
    # baseline only: the server tells requests apart by question, which every epoch asks again
    config = write_config(root / "killed", server.base_url, concurrency=RESUME_CONCURRENCY, cache=False, epochs=0)
    server.take_asked()
    process = subprocess.Popen([*CLI, "train", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               cwd=config.parent, start_new_session=True)  # fmt: skip
    try:
        run = wait_for_rollouts(root / "killed" / "runs", len(PROBLEMS) // 2, timeout_s=120)
    finally:
        process.send_signal(signal.SIGKILL)  # no chance to clean up, as in a crash or an OOM kill
        process.wait(timeout=10)
    time.sleep(0.3)  # let the server read any request the killed process had already written to its socket
    journaled = {e["record"]["question"] for e in run.events() if e["event"] == "rollout"}
    in_flight = len(set(server.take_asked()) - journaled)  # started, never journaled: the work the kill lost
    resumed = subprocess.run([*CLI, "train", "--resume", str(run.path)], capture_output=True, text=True,
                             timeout=300, cwd=config.parent)  # fmt: skip
    if resumed.returncode != 0 or RunDir(run.path).info().status != "finished":
        raise RuntimeError(f"resume failed: {resumed.stderr}")
    asked_again = server.take_asked()
    repeated = sum(q in journaled for q in asked_again)
    print(f"4. SIGKILL at {len(journaled)} rollouts journaled (concurrency {RESUME_CONCURRENCY}), then --resume: "
          f"in flight at the kill {in_flight}; resume sent {len(asked_again)} requests, {repeated} for journaled tasks")
    return repeated, in_flight


def main() -> None:
    with tempfile.TemporaryDirectory() as folder, ServerProcess(LATENCY_S) as server:
        root = Path(folder)
        run = bench_workload(root, server)
        rerun_requests = bench_cached_rerun(root, server)
        repeated, in_flight = bench_kill_and_resume(root, server)
    rows = [
        ("sequential LLM time (requests x 200 ms)", f"{run.sequential_llm_s:.1f} s", ""),
        (f"train command wall time, concurrency {CONCURRENT}", f"{run.wall_s:.1f} s", ""),
        ("speedup over the sequential LLM time", f"{run.sequential_llm_s / run.wall_s:.1f}x", ">= 8x"),
        ("CPU of all processes per rollout", f"{run.cpu_s * 1000 / run.rollouts:.0f} ms", "<= 60 ms"),
        ("requests of a cached identical rerun", str(rerun_requests), "0"),
        ("requests repeated after SIGKILL + resume", str(repeated), "0"),
        ("rollouts in flight at the kill", str(in_flight), f"<= {RESUME_CONCURRENCY}"),
    ]
    print(f"\n{'summary':44} {'measured':>10}  target")
    for name, value, target in rows:
        print(f"{name:44} {value:>10}  {target}".rstrip())


if __name__ == "__main__":
    main()
