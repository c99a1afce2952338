"""Training-loop figures on a realistic workload, against the tests' fake server (200 ms per request), timed as
the user waits for them: the whole `agenttrain train` command (the console script, in a subprocess), from the
moment it is started to the moment it has exited.

Two workloads of 48 MATH-style problems, multi-turn, `llm.concurrency: 16`. In epoch 0 a third of the rollouts
run a code block before answering (the rest guess); the optimizer then adds a learned function, and in epoch 1
every rollout uses it:
- "bench" (2 epochs): a third call it after their code block (3 requests), the rest call it as a tool (2);
- "issue 27" (3 epochs, the shape timed in issue 27): a third call it inside their code block, the rest as a
  tool (2 requests each); in epoch 2 the optimizer ends its step at once. 163 requests.

1. each workload, `--runs` times (5 by default): the whole command's wall time against the sequential LLM time
   (requests x 200 ms), and where it goes: the spans from the process's start to its exit, next to the LLM's
   critical path in each (an epoch's optimizer requests, then its agent requests in waves of 16: a lower bound,
   as every wave is full only where the turns each rollout takes are known in advance). The spans
   come from one clock: the server's arrival times and the run folder's file times;
2. CPU time of every process the command starts (trainer, fork servers, sandbox sessions, scorer workers) per
   rollout, from a cgroup (see cpu_cgroup.py);
3. requests made by an identical rerun with the cache on (the invariant: 0);
4. requests repeated after a SIGKILL mid-epoch and `train --resume` (the invariant: 0), and the rollouts
   in flight at the kill (an upper bound on the work lost).

`--before DIR` times the agenttrain package in DIR too (e.g. `git archive main | tar -x -C DIR`), run for run
alternating with this checkout's, so that both meet the same load; the table then shows both.
The fake server runs in a child process outside the measured cgroup: see `ServerProcess`.
Run: .venv/bin/python bench/bench_training.py [--runs N] [--before DIR]
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import multiprocessing
import os
import signal
import statistics
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
CODE_EVERY = 3  # every third problem runs a code block
AGENTTRAIN = str(Path(sys.executable).with_name("agenttrain"))  # the console script a user types


@dataclass(frozen=True)
class Workload:
    name: str
    epochs: int  # optimizer.epochs: epoch 0 (baseline), then one per optimizer step
    code_calls_function: bool  # with the learned function, the code block calls it (else: a tool call after it)


BENCH = Workload("bench", epochs=1, code_calls_function=False)
ISSUE_27 = Workload("issue 27", epochs=2, code_calls_function=True)


def realistic_world(code_calls_function: bool, body: dict[str, Any]) -> Reply:
    """The optimizer adds `multiply`, then ends its step (as a real one does once its edit is made, instead of
    repeating an action that would be refused); the agent runs code for a third of the problems, calls
    `multiply` whenever it is offered (in its code block, or as a tool), and answers right only after one of
    them."""
    if is_optimizer(body):
        return TERMINATE if "def multiply" in json.dumps(body["messages"]) else add("multiply", MULTIPLY)
    a = numbers(question(body))[0]
    said = [str(m.get("content") or "") for m in body["messages"] if m["role"] == "assistant"]
    ran_code = any("```python" in text for text in said)
    called = any(m["role"] == "tool" for m in body["messages"])
    offered = "multiply" in offered_tools(body)
    if a % CODE_EVERY == 0 and not ran_code:
        if offered and code_calls_function:
            return Reply(content=f"Let me compute.\n```python\nprint(multiply({a}, 3))\n```")
        return Reply(content=f"Let me compute.\n```python\nimport sympy\nprint(sympy.Integer({a}) * 3)\n```")
    if offered and not called and not (ran_code and code_calls_function):
        return tool_call("multiply", {"a": a, "b": 3})
    return boxed(a * 3 if ran_code or called else 0)


Asked = tuple[float, str, bool]  # a request's arrival (time.time()), its question, whether the optimizer sent it


def _serve(connection: Connection, latency_s: float, code_calls_function: bool) -> None:
    """Child process: run the fake server; on "take", send what was asked since the last take."""
    with FakeOpenAI(functools.partial(realistic_world, code_calls_function), latency_s=latency_s) as server:
        connection.send(server.base_url)
        while connection.recv() == "take":
            # handler threads only append, so slicing off the first n bodies never loses a newer one
            count = min(len(server.requests), len(server.arrivals))
            taken = list(zip(server.arrivals[:count], server.requests[:count], strict=True))
            del server.requests[:count], server.arrivals[:count]
            connection.send([(arrived, question(body), is_optimizer(body)) for arrived, body in taken])


class ServerProcess:
    """FakeOpenAI in a child process, so that its CPU is not counted with the training side's."""

    def __init__(self, latency_s: float, workload: Workload = BENCH) -> None:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited threads or state
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, latency_s, workload.code_calls_function),
                                        daemon=True)  # fmt: skip
        self.base_url = ""

    def __enter__(self) -> ServerProcess:
        self._process.start()
        self.base_url = self._connection.recv()
        return self

    def __exit__(self, *exc: object) -> None:
        self._connection.send("stop")
        self._process.join(timeout=10)

    def take(self) -> list[Asked]:
        """Each request received since the last call (one request per agent turn or optimizer step)."""
        self._connection.send("take")
        return self._connection.recv()

    def take_asked(self) -> list[str]:
        return [asked for _, asked, _ in self.take()]


def write_config(folder: Path, base_url: str, *, concurrency: int, cache: bool, epochs: int = BENCH.epochs) -> Path:
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
    wall_s: float  # the whole command, from its start to its exit
    spans: dict[str, float]  # where that time went, in order
    llm_path: dict[str, float]  # the LLM's critical path in each span
    cpu_s: float  # every process the command started
    requests: int
    rollouts: int
    left_running: int  # processes of the command still running once it had exited

    @property
    def sequential_llm_s(self) -> float:
        return self.requests * LATENCY_S

    @property
    def speedup(self) -> float:
        return self.sequential_llm_s / self.wall_s

    @property
    def cpu_ms_per_rollout(self) -> float:
        return self.cpu_s * 1000 / self.rollouts


def timed_train(config: Path, server: ServerProcess, source: str | None = None) -> TimedRun:
    """`agenttrain train` in a fresh cgroup, so that its CPU counts every process it starts; with `source`, the
    agenttrain package in that folder instead of this checkout's. Output goes to files, not pipes: a process
    left behind holding a pipe would otherwise stretch the measured time past the command's exit."""
    server.take()  # forget earlier runs' requests
    cpu = CpuCgroup(f"agenttrain-bench-training-{config.parent.name}")
    env = {**os.environ, "PYTHONPATH": source} if source else None
    with open(config.parent / "stdout.txt", "w") as stdout, open(config.parent / "stderr.txt", "w+") as stderr:
        started = time.time()
        process = subprocess.Popen([AGENTTRAIN, "train", str(config)], stdout=stdout, stderr=stderr,
                                   cwd=config.parent, env=env, preexec_fn=cpu.join)  # fmt: skip
        code = process.wait()
        exited = time.time()
        left_running = len(cpu.processes())
        stderr.seek(0)
        errors = stderr.read()
    cpu_s = cpu.cpu_s()
    cpu.close()
    (path,) = find_runs(config.parent / "runs")
    run = RunDir(path)
    if code != 0 or run.info().status != "finished":
        raise RuntimeError(f"{path}: ended {run.info().status}: {errors[-2000:]}")
    asked = server.take()
    rollouts = sum(e["event"] == "rollout" for e in run.events())
    spans, llm_path = _spans(run, asked, started, exited)
    return TimedRun(exited - started, spans, llm_path, cpu_s, len(asked), rollouts, left_running)


def _mtime(path: Path) -> float:
    return path.stat().st_mtime_ns / 1e9


def _spans(run: RunDir, asked: list[Asked], started: float, exited: float) -> tuple[dict[str, float], ...]:
    """The command's time cut at its milestones (the run folder made, the first request, each snapshot written,
    the final status), and the LLM's critical path in each: an epoch's optimizer requests one after the other,
    then its agent requests in waves of `CONCURRENT`."""
    folder, status = _mtime(run.path / "config.yaml"), _mtime(run.path / "run.json")
    first_request = min((arrived for arrived, _, _ in asked), default=folder)  # a cached rerun asks nothing
    spans = {"start to run folder": folder - started, "run folder to first request": first_request - folder}
    llm_path = dict.fromkeys(spans, 0.0)
    begun = first_request
    for epoch in run.epochs():
        ended = max(_mtime(file) for file in run.snapshot(epoch).path.iterdir())
        within = [optimizer for arrived, _, optimizer in asked if begun <= arrived < ended]
        optimizer = sum(within)
        spans[f"epoch {epoch}"] = ended - begun
        llm_path[f"epoch {epoch}"] = (optimizer + math.ceil((len(within) - optimizer) / CONCURRENT)) * LATENCY_S
        begun = ended
    spans["last snapshot to final status"] = status - begun
    spans["final status to exit"] = exited - status
    llm_path.update({"last snapshot to final status": 0.0, "final status to exit": 0.0})
    return spans, llm_path


def bench_workload(
    root: Path, workload: Workload, runs: int, sources: dict[str, str | None]
) -> dict[str, list[TimedRun]]:
    """`runs` runs of `workload` per source, alternating between the sources run for run."""
    timed: dict[str, list[TimedRun]] = {label: [] for label in sources}
    with ServerProcess(LATENCY_S, workload) as server:
        for n in range(runs):
            for i, (label, source) in enumerate(sources.items()):
                folder = root / f"{workload.name.replace(' ', '-')}-{i}-{n}"
                config = write_config(folder, server.base_url, concurrency=CONCURRENT, cache=False,
                                      epochs=workload.epochs)  # fmt: skip
                timed[label].append(timed_train(config, server, source))
    return timed


def _range(values: list[float], unit: str = "", digits: int = 2) -> str:
    """`low-high ~median`: on a shared machine one run can stall, which the median shows apart."""
    low, high, middle = (f"{v:.{digits}f}" for v in (min(values), max(values), statistics.median(values)))
    return f"{low}{unit}" if low == high else f"{low}-{high}{unit} ~{middle}"


def print_spans(workload: Workload, timed: dict[str, list[TimedRun]]) -> None:
    """The span table: the LLM's critical path, and each source's range over its runs."""
    runs = next(iter(timed.values()))
    first = runs[0]
    print(f"\n1. workload {workload.name!r}: {len(PROBLEMS)} problems, {workload.epochs + 1} epochs, "
          f"{first.requests} requests x {LATENCY_S * 1000:.0f} ms = {first.sequential_llm_s:.1f} s sequential, "
          f"concurrency {CONCURRENT}, cache off; seconds, ranges over {len(runs)} runs")
    labels = list(timed)
    print(f"   {'span':32} {'LLM path':>9}" + "".join(f" {label:>22}" for label in labels))
    for span, path_s in first.llm_path.items():
        cells = "".join(f" {_range([r.spans.get(span, math.nan) for r in timed[label]]):>22}" for label in labels)
        print(f"   {span:32} {path_s:>9.2f}{cells}")
    total_path = sum(first.llm_path.values())
    rows = [
        ("whole command (s)", f"{total_path:.2f}", lambda runs: _range([r.wall_s for r in runs])),
        ("speedup vs sequential LLM", f"{first.sequential_llm_s / total_path:.1f}x",
         lambda runs: _range([r.speedup for r in runs], "x", 1)),
        ("CPU per rollout (ms)", "", lambda runs: _range([r.cpu_ms_per_rollout for r in runs], digits=0)),
        ("left running after exit", "0", lambda runs: str(max(r.left_running for r in runs))),
    ]  # fmt: skip
    for name, bound, cell in rows:
        print(f"   {name:32} {bound:>9}" + "".join(f" {cell(timed[label]):>22}" for label in labels))


def bench_cached_rerun(root: Path, server: ServerProcess) -> int:
    config = write_config(root / "cached", server.base_url, concurrency=CONCURRENT, cache=True)
    first = timed_train(config, server)
    for path in find_runs(config.parent / "runs"):
        subprocess.run(["rm", "-r", str(path)], check=True)  # timed_train reads the one run in the folder
    rerun = timed_train(config, server)
    print(f"\n3. identical rerun with the cache on: first run {first.requests} requests, rerun {rerun.requests}")
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each workload per source")
    parser.add_argument("--before", metavar="DIR", help="also time the agenttrain package in DIR")
    args = parser.parse_args()
    sources: dict[str, str | None] = {"this checkout": None}
    if args.before:
        sources = {"before": str(Path(args.before).resolve()), "after": None}
    probe = CpuCgroup("agenttrain-bench-training-probe")
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min average, {os.cpu_count()} CPUs); CPU: {probe.how}")
    probe.close()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        timed = {workload: bench_workload(root, workload, args.runs, sources) for workload in (BENCH, ISSUE_27)}
        for workload, by_source in timed.items():
            print_spans(workload, by_source)
        with ServerProcess(LATENCY_S) as server:
            rerun_requests = bench_cached_rerun(root, server)
            repeated, in_flight = bench_kill_and_resume(root, server)
    print(f"load after: {os.getloadavg()[0]:.2f}")
    ours = timed[ISSUE_27][list(sources)[-1]]
    rows = [
        (f"issue 27 workload: speedup over the sequential LLM time (whole command, {len(ours)} runs)",
         _range([r.speedup for r in ours], "x", 1), ">= 8x"),
        ("issue 27 workload: CPU of all processes per rollout (ms)",
         _range([r.cpu_ms_per_rollout for r in ours], digits=0), "<= 45"),
        ("processes left running after the command exited", str(max(r.left_running for r in ours)), "0"),
        ("requests of a cached identical rerun", str(rerun_requests), "0"),
        ("requests repeated after SIGKILL + resume", str(repeated), "0"),
        ("rollouts in flight at the kill", str(in_flight), f"<= {RESUME_CONCURRENCY}"),
    ]  # fmt: skip
    print(f"\n{'summary':78} {'measured':>18}  target")
    for name, value, target in rows:
        print(f"{name:78} {value:>18}  {target}".rstrip())


if __name__ == "__main__":
    main()
