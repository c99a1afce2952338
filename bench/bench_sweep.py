"""A 12-run `agenttrain sweep` against a rate-limited endpoint: the sweep's one request limit and one budget.

The endpoint is the tests' fake OpenAI server: 0.5 s per request, and a 429 with Retry-After for a request that
arrives while ENDPOINT_SLOTS are in flight (a provider's concurrency limit). The sweep is told `--concurrency
SWEEP_CONCURRENCY`, twice what the endpoint takes, so its shared limit must adapt. Each run trains one epoch on 8
multiplication problems (a learned `multiply` makes each conversation two requests) and is evaluated on 4; every
job has `llm.concurrency` 8, so any one of them could fill the endpoint alone.

Per setting (local `--jobs 1, 4, 8`, and `--executor ray` with 4 jobs on a 3-node cluster on this machine):
- wall time of the `agenttrain sweep` command against the bound the endpoint allows (requests x 0.5 s / slots);
- beside it, the bound the runs themselves allow ("achievable"), the largest of three lower bounds, each from what
  this bench measures, nothing tuned: the endpoint's (above); the runs' serial chains, ceil(runs / jobs) runs one
  after another in some job, each taking at least what a run takes alone (the --jobs 1 setting's wall time / runs:
  its process start, sandbox and scorer start, request waves, evaluation); and the CPU, the CPU seconds the sweep's
  processes used over this machine's cores (as if no one else used them; the Ray setting's jobs run under Ray's
  processes, whose CPU is not counted, so there it is left out). The endpoint's bound counts only the LLM: where the
  achievable bound is above it, the difference is the runs' own (start-up, scoring, CPU), not the shared limit's;
- requests the endpoint refused, in all and once the limit has adapted (after the first 429's burst);
- progress spread: the slots each job was given while other jobs waited for one too, over its fair part of them
  (OUT/ledger.json's fair_share), the least and the most across the jobs that waited with others for at least
  CONTENDED slots' worth (1.0: its due; a starved job is far below);
- then a budget: `--max-usd` at half the sweep's cost stops the running jobs (spend against the limit, and what
  went past it in requests, per job at most one is the target), and a rerun with a larger budget finishes them.
Targets: <= 2% refused once adapted; the budget exceeded by at most one request's cost per job; wall time within
15% of the endpoint's bound (the achievable bound is printed next to it, not in its place). The load average is
printed per setting: other processes on the machine take CPU from the sweep. About four minutes.
Run: .venv/bin/python bench/bench_sweep.py
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.*

from agenttrain.config import BudgetConfig, LLMConfig, Price
from agenttrain.endpoint.client import LLMClient
from agenttrain.endpoint.shared_limits import join
from agenttrain.endpoint.usage import UsageMeter
from agenttrain.sweeping.ledger import Spend, SweepLedger, SweepLimits
from agenttrain.sweeping.ledger_server import serving
from tests.support.fake_openai import FakeOpenAI
from tests.support.ray_nodes import local_cluster
from tests.support.scripted import MULTIPLY, TERMINATE, add, is_optimizer, list_b, multiplying_agent

LATENCY_S = 0.5
ENDPOINT_SLOTS = 8  # requests the endpoint serves at once; one more is refused with 429
RETRY_AFTER_S = 0.5
SWEEP_CONCURRENCY = 16  # what the sweep is told: too many, so its limit has to adapt
RUNS = 12
TRAIN, TEST = 8, 4
# epoch 0 (one request a task), the optimizer's step (its edit, then its TERMINATE), epoch 1 (two a task: a call to
# `multiply`, then the answer), then the test split at epoch 0 and at the best epoch, 1
REQUESTS_PER_RUN = TRAIN + 2 + 2 * TRAIN + TEST + 2 * TEST
PRICE = {"input": 1000.0, "output": 2000.0}  # per million tokens: the fake's 10 + 5 tokens make $0.02 a request
REQUEST_USD = 0.02
CONTENDED = 10  # a job's fair share counts once it waited with others for this many slots' worth
ADAPTING_S = 2.0  # after the first 429, the time the limit takes to settle (requests then in flight still count)
CLI = [sys.executable, "-c", "from agenttrain.cli import main; main()"]


def respond(body: dict[str, Any]) -> Any:
    if is_optimizer(body):
        return TERMINATE if "multiply" in list_b(body) else add("multiply", MULTIPLY)
    return multiplying_agent(body)


def write_sweep(root: Path, base_url: str) -> Path:
    """A sweep file of RUNS entries of one config."""
    problems = root / "problems.jsonl"
    with open(problems, "w", encoding="utf-8") as handle:
        for i in range(TRAIN + TEST):
            record = {"unique_id": f"p{i}", "problem": f"What is {i + 2} times {i + 13}?", "type": "Algebra",
                      "solution": f"\\boxed{{{(i + 2) * (i + 13)}}}", "level": "Level 1"}
            handle.write(json.dumps(record) + "\n")
    config = {
        "name": "bench", "task": {"name": "math", "path": str(problems), "train_size": TRAIN, "test_size": TEST},
        "agent": {"model": "agent", "max_turns": 4}, "optimizer": {"model": "optimizer", "epochs": 1},
        "llm": {"base_url": base_url, "concurrency": ENDPOINT_SLOTS, "max_retries": 20, "max_outage_s": 60,
                "cache": False, "prices": {"agent": PRICE, "optimizer": PRICE}},
        "sandbox": {"timeout_s": 20, "warm_workers": 1},
    }
    (root / "bench.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    entries = [{"config": "bench.yaml", "name": f"job-{k}"} for k in range(RUNS)]
    (root / "sweep.yaml").write_text(yaml.safe_dump({"description": "bench", "runs": entries}), encoding="utf-8")
    return root / "sweep.yaml"


@dataclass
class Measured:
    setting: str
    jobs: int
    load: float  # the machine's load average (1 minute) as the setting started
    cpu_s: float | None  # CPU seconds of the sweep's processes; None where not measured
    wall_s: float
    sent: int
    refused: int
    refused_adapted: float  # share refused once the limit has adapted
    shares: tuple[float, float]  # the least and the most of its fair share of the slots a job got
    settled: int  # the endpoint's shared limit at the end

    @property
    def bound_s(self) -> float:
        return self.sent * LATENCY_S / ENDPOINT_SLOTS

    def achievable_s(self, run_alone_s: float) -> float:
        """The largest of the endpoint's bound, the runs' serial chains' and the CPU's (the module's docstring)."""
        chains = math.ceil(RUNS / self.jobs) * run_alone_s
        return max(self.bound_s, chains, (self.cpu_s or 0.0) / (os.cpu_count() or 1))


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # every process waited for, and what it waited for
    return usage.ru_utime + usage.ru_stime


def sweep(sweep_file: Path, out: Path, *args: str, env: dict[str, str] | None = None) -> tuple[float, float]:
    """The sweep's wall time and the CPU seconds of its processes."""
    started, cpu = time.monotonic(), children_cpu_s()
    done = subprocess.run([*CLI, "sweep", str(sweep_file), "--out", str(out), "--no-cache", *args],
                          env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"the sweep failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.monotonic() - started, children_cpu_s() - cpu


def measure(setting: str, jobs: int, load: float, cpu_s: float | None, server: FakeOpenAI, first: int,
            refused_from: int, wall_s: float, ledger: dict[str, Any]) -> Measured:
    """The setting's figures, from the endpoint's log since request `first` (refusal `refused_from`) and the sweep's
    ledger report."""
    arrivals, refused = server.arrivals[first:], server.refused[refused_from:]
    settled = refused[0] + ADAPTING_S if refused else 0.0
    later = sum(t > settled for t in arrivals) + sum(t > settled for t in refused)
    shares = [job["fair_share"] for job in ledger["jobs"].values() if job["contended_slots"] >= CONTENDED] or [1.0]
    [endpoint] = ledger["endpoints"].values()
    return Measured(setting, jobs, load, cpu_s, wall_s, len(arrivals), len(refused),
                    sum(t > settled for t in refused) / later if later else 0.0, (min(shares), max(shares)),
                    endpoint["limit"])


def run_setting(setting: str, jobs: int, server: FakeOpenAI, sweep_file: Path, out: Path, *args: str,
                env: dict[str, str] | None = None) -> Measured:
    first, refused_from, load = len(server.requests), len(server.refused), os.getloadavg()[0]
    wall_s, cpu_s = sweep(sweep_file, out, "--jobs", str(jobs), "--concurrency", str(SWEEP_CONCURRENCY), *args,
                          env=env)
    row = measure(setting, jobs, load, None if env else cpu_s, server, first, refused_from, wall_s,
                  json.loads((out / "ledger.json").read_text()))
    report(row)
    return row


def report(row: Measured) -> None:
    cpu = "" if row.cpu_s is None else f", {row.cpu_s:.0f} CPU s"
    print(f"{row.setting:24} {row.wall_s:6.1f} s{cpu}, load {row.load:.1f}, bound {row.bound_s:5.1f} s; "
          f"{row.sent} sent, {row.refused} refused "
          f"({row.refused_adapted:.1%} once adapted); limit settled at {row.settled}; fair share "
          f"{row.shares[0]:.2f}-{row.shares[1]:.2f}", flush=True)


async def chats(base_url: str, count: int) -> None:
    settings = LLMConfig(base_url=base_url, concurrency=SWEEP_CONCURRENCY, max_retries=20)
    client = LLMClient(settings, role="agent", meter=UsageMeter(BudgetConfig(), {"agent": Price(**PRICE)}), cache=None)
    try:
        await asyncio.gather(*(client.chat([{"role": "user", "content": f"What is {k} times 7?"}], model="agent")
                               for k in range(count)))
    finally:
        await client.close()


def limit_alone(server: FakeOpenAI, count: int) -> Measured:
    """The shared limit without the runs around it (no processes to start, no sandbox, no scoring): `count` chats at
    once from this process through a sweep's ledger. This process joins that ledger for good: run it last."""
    first, refused_from, load = len(server.requests), len(server.refused), os.getloadavg()[0]
    ledger = SweepLedger(SweepLimits(concurrency=SWEEP_CONCURRENCY), 1, Spend())
    with serving(ledger) as served:
        join(served.address, "alone")
        started = time.monotonic()
        asyncio.run(chats(server.base_url, count))
        wall_s = time.monotonic() - started
    row = measure(f"the limit alone, {count} chats", RUNS, load, None, server, first, refused_from, wall_s,
                  ledger.report())
    report(row)
    return row


@contextlib.contextmanager
def ray_cluster() -> Iterator[dict[str, str]]:
    """Three nodes of 2 logical CPUs: the jobs (one CPU each) spread over them; the environment that reaches it."""
    with local_cluster(3, 2) as cluster:
        yield {"RAY_ADDRESS": cluster.address}


def budget(server: FakeOpenAI, sweep_file: Path, out: Path) -> tuple[float, float, float, float, int]:
    """The sweep stopped at half its cost, then finished with a larger budget: (limit, spent, wall stopped, wall
    finished, runs finished and evaluated)."""
    limit = RUNS * REQUESTS_PER_RUN * REQUEST_USD / 2
    first = len(server.requests)
    limits = ["--jobs", "4", "--concurrency", str(SWEEP_CONCURRENCY), "--max-usd"]
    stopped_s, _ = sweep(sweep_file, out, *limits, f"{limit:g}")
    spent = (len(server.requests) - first) * REQUEST_USD
    finished_s, _ = sweep(sweep_file, out, *limits, f"{4 * limit:g}")
    rows = json.loads((out / "results.json").read_text())["rows"]
    return limit, spent, stopped_s, finished_s, sum(r["status"] == "finished" and r["after"] is not None
                                                     for r in rows)


def main() -> None:
    with tempfile.TemporaryDirectory() as folder, \
            FakeOpenAI(respond, latency_s=LATENCY_S, rate_limit=ENDPOINT_SLOTS, retry_after_s=RETRY_AFTER_S) as server:
        root = Path(folder)
        sweep_file = write_sweep(root, server.base_url)
        os.environ["OPENAI_API_KEY"] = "sk-bench-not-a-real-key"
        print(f"{RUNS} runs; endpoint {LATENCY_S:g} s a request, {ENDPOINT_SLOTS} at once (429 beyond); sweep "
              f"--concurrency {SWEEP_CONCURRENCY}", flush=True)
        rows = [run_setting(f"local --jobs {jobs}", jobs, server, sweep_file, root / f"jobs-{jobs}")
                for jobs in (1, 4, 8)]
        with ray_cluster() as env:
            rows.append(run_setting("ray --jobs 4 (3 nodes)", 4, server, sweep_file, root / "ray", "--executor", "ray",
                                    env=env))
        limit, spent, stopped_s, finished_s, finished = budget(server, sweep_file, root / "budget")
        rows.append(limit_alone(server, rows[0].sent))
    run_alone_s = rows[0].wall_s / RUNS  # --jobs 1: one run at a time
    print(f"\n{'setting':24} {'load':>5} {'wall s':>7} {'bound s':>8} {'over':>6} {'achievable s':>13} {'over':>6} "
          f"{'CPU s':>6} {'refused':>8} {'adapted':>8} {'fair share':>11}")
    for row in rows:
        achievable = row.achievable_s(run_alone_s)
        cpu = "-" if row.cpu_s is None else f"{row.cpu_s:.0f}"
        print(f"{row.setting:24} {row.load:5.1f} {row.wall_s:7.1f} {row.bound_s:8.1f} "
              f"{row.wall_s / row.bound_s - 1:6.0%} {achievable:13.1f} {row.wall_s / achievable - 1:6.0%} {cpu:>6} "
              f"{row.refused:8d} "
              f"{row.refused_adapted:8.1%} {row.shares[0]:6.2f}-{row.shares[1]:.2f}")
    past = (spent - limit) / REQUEST_USD
    print(f"\nbudget --max-usd {limit:.2f} (half the sweep), --jobs 4: spent ${spent:.2f} ({past:+.0f} requests past "
          f"the limit; target <= +4), stopped after {stopped_s:.1f} s; rerun with a larger budget: {finished} of "
          f"{RUNS} runs finished and evaluated after {finished_s:.1f} s more")


if __name__ == "__main__":
    main()
