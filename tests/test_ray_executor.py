"""Rollouts on Ray workers: the same runs as the local executor, one cache across workers, a worker killed
mid-rollout costs only that rollout. One local Ray instance (loopback, 4 logical CPUs) serves every test."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from agenttrain import api  # noqa: E402
from agenttrain.rundir.directory import RunDir  # noqa: E402
from tests.support.fake_openai import FakeOpenAI  # noqa: E402
from tests.support.files import ConfigWriter, write_problems  # noqa: E402
from tests.support.scripted import MULTIPLY, TERMINATE, add, is_optimizer, list_b, multiplying_agent, question  # noqa: E402
from tests.test_resume import PROBLEMS, killed_run  # noqa: E402
from tests.test_sweep import invoke, responder, two_configs  # noqa: E402

PRODUCTS = [(f"What is {a} times 7?", str(a * 7)) for a in range(2, 8)]
ON_RAY = ["executor.kind=ray", "executor.num_cpus_per_rollout=1"]
# Ray starts a worker process per actor (seconds each on a loaded machine): room beyond the default limit
pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    # address "local": a new instance, never another Ray that happens to run on this machine
    ray.init(address="local", num_cpus=4, include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level=logging.WARNING)
    yield
    ray.shutdown()


def optimizer(body: dict[str, Any]) -> Any:
    return TERMINATE if "multiply" in list_b(body) else add("multiply", MULTIPLY)


def world(agent=multiplying_agent) -> FakeOpenAI:
    return FakeOpenAI(lambda body: optimizer(body) if is_optimizer(body) else agent(body))


def config(write_config: ConfigWriter, server: FakeOpenAI, tmp_path: Path, cache_dir: str, **llm: Any) -> Path:
    data = write_problems(tmp_path / "problems.jsonl", PRODUCTS)
    return write_config(server.base_url, data, task={"train_size": len(PRODUCTS), "test_size": 0},
                        llm={"cache_dir": str(tmp_path / cache_dir), "concurrency": 2, **llm})


def epochs(run: RunDir) -> list[tuple[Any, ...]]:
    """What a run learned and measured, epoch by epoch, without timings."""
    return [(s.metrics.status, s.metrics.train_accuracy, s.functions.to_json(), s.rollouts(),
             {role: u["requests"] for role, u in s.metrics.usage.items()})
            for s in map(run.snapshot, run.epochs())]


def test_training_on_ray_gives_the_local_run_and_a_rerun_replays_it_from_the_cache(write_config, tmp_path):
    with world() as server:
        local = api.train(config(write_config, server, tmp_path, "cache-local")).run
        local_requests = len(server.requests)
        on_ray = api.train(config(write_config, server, tmp_path, "cache-ray"), ON_RAY).run
        assert len(server.requests) == 2 * local_requests  # its own cache: every request sent once more
        server.requests.clear()
        rerun = api.train(config(write_config, server, tmp_path, "cache-ray"), ON_RAY).run
        assert server.requests == []
    assert [e[1] for e in epochs(local)] == [0.0, 1.0, 1.0]
    assert epochs(on_ray) == epochs(local)
    assert epochs(rerun)[0][:4] == epochs(local)[0][:4]
    assert on_ray.info().usage["agent"]["requests"] == local.info().usage["agent"]["requests"]
    assert rerun.info().usage["agent"]["requests"] == 0
    assert rerun.info().usage["agent"]["cache_hits"] == local.info().usage["agent"]["requests"]


def parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state, past a name that may hold spaces


def descends_from_this_process(pid: int) -> bool:
    """Ray started here runs its workers under this process's raylet; another test run's Ray does not."""
    while pid > 1:
        pid = parent(pid)
        if pid == os.getpid():
            return True
    return False


def rollout_worker_pids() -> list[int]:
    """Ray names its worker processes after the actor class they host."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            pid = int(cmdline.parent.name)
            if cmdline.read_bytes().startswith(b"ray::RolloutWorker") and descends_from_this_process(pid):
                pids.append(pid)
        except OSError:  # the process ended meanwhile
            continue
    return pids


def test_a_worker_killed_mid_rollout_costs_only_that_rollout(write_config, tmp_path):
    victim, killed = PRODUCTS[3][0], threading.Event()

    def agent(body: dict[str, Any]) -> Any:
        if question(body) == victim and not killed.is_set():
            killed.set()
            (worker,) = rollout_worker_pids()  # concurrency 1: one worker, and it is waiting on this reply
            os.kill(worker, signal.SIGKILL)
        return multiplying_agent(body)

    with world(agent) as server:
        run = api.train(config(write_config, server, tmp_path, "cache", concurrency=1), [*ON_RAY, "optimizer.epochs=0"]
                        ).run
    assert killed.is_set()
    asked = [question(b) for b in server.requests if not is_optimizer(b)]
    assert sorted(asked) == sorted([p for p, _ in PRODUCTS] + [victim])  # the victim's rollout ran again, alone
    assert run.info().status == "finished"
    journaled = [e["record"]["question"] for e in run.events() if e["event"] == "rollout"]
    assert sorted(journaled) == sorted(p for p, _ in PRODUCTS)
    assert sorted(r.question for r in run.snapshot(0).rollouts()) == sorted(p for p, _ in PRODUCTS)


def test_the_budget_and_the_request_limit_hold_for_all_workers_together(write_config, tmp_path):
    """Each request costs 15 tokens. A budget of 30 per worker would let each of the three workers send two,
    all six rollouts; for the run as a whole, the first three leave one more request at most."""
    with world() as server:
        run = api.train(config(write_config, server, tmp_path, "cache", concurrency=3, cache=False),
                        [*ON_RAY, "budget.max_tokens=30"]).run
    assert run.info().status == "budget_exhausted"
    assert server.max_in_flight <= 3
    assert 3 <= len(server.requests) <= 4


def test_a_local_run_killed_mid_epoch_resumes_on_ray_without_repeating_journaled_rollouts(write_config, tmp_path):
    slow = FakeOpenAI(lambda body: "TERMINATE" if is_optimizer(body) else multiplying_agent(body), latency_s=0.2)
    with slow as server:
        run = killed_run(write_config, server, tmp_path, 2)
        journaled = {e["record"]["question"] for e in run.events() if e["event"] == "rollout"}
        server.requests.clear()
        outcome = api.resume(run.path, ON_RAY)
    asked = {question(b) for b in server.requests if not is_optimizer(b)}
    assert outcome.status == "finished"
    assert asked == {p for p, _ in PROBLEMS} - journaled
    assert sorted(r.question for r in run.snapshot(0).rollouts()) == sorted(p for p, _ in PROBLEMS)


def test_a_sweep_on_ray_runs_each_job_as_a_ray_task_and_a_rerun_reuses_them(write_config, tmp_path):
    with FakeOpenAI(responder) as server:
        configs = [str(path) for path in two_configs(write_config, server, tmp_path)]
        out = str(tmp_path / "sweep")
        first = invoke("sweep", *configs, "--out", out, "--jobs", "2", "--executor", "ray")
        sent = len(server.requests)
        again = invoke("sweep", *configs, "--out", out, "--jobs", "2", "--executor", "ray")
    assert sorted(first["ran"]) == ["assistant-s0", "react-s0"]
    for row in first["rows"]:
        assert row["status"] == "finished" and row["error"] is None
        tested = json.loads((Path(row["run"]) / "evals" / "test-epoch-0.json").read_text())
        assert row["before"] == tested["accuracy"]
    assert again["ran"] == [] and len(server.requests) == sent  # complete: reused, nothing sent again
    assert again["rows"] == first["rows"]
