"""Faults from outside the program: a kill at any write, an endpoint that misbehaves, a full disk, Ctrl-C.
Each ends, after `--resume`, in the run an undisturbed process would have written, or in one clear line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from agenttrain import api
from agenttrain.runs import RunDir, find_runs
from tests.conftest import write_problems
from tests.fake_openai import FakeOpenAI, Fault
from tests.scripted import MULTIPLY, TERMINATE, add, is_optimizer, list_b, multiplying_agent, question

PRODUCTS = [(f"What is {a} times 3?", str(a * 3)) for a in range(2, 6)]

# Runs the CLI with an audit hook that SIGKILLs the process at its KILL_AT_WRITE-th write under KILL_UNDER:
# every file opened for writing, renamed or made there counts, so the loop below visits every write of a run.
KILLER = """
import os, signal, sys
limit, root, me, seen = int(os.environ["KILL_AT_WRITE"]), os.environ["KILL_UNDER"], os.getpid(), [0]
WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

def hook(event, args):
    if os.getpid() != me:
        return
    if event == "open" and isinstance(args[0], str) and args[2] & WRITING or event in ("os.rename", "os.mkdir"):
        if str(args[0]).startswith(root):
            seen[0] += 1
            if seen[0] == limit:
                os.kill(me, signal.SIGKILL)

sys.addaudithook(hook)
from agenttrain.cli import main
sys.argv = ["agenttrain", *sys.argv[1:]]
main()
"""


def optimizer(body: dict[str, Any]) -> Any:
    return TERMINATE if "multiply" in list_b(body) else add("multiply", MULTIPLY)


def world(body: dict[str, Any]) -> Any:
    return optimizer(body) if is_optimizer(body) else multiplying_agent(body)


def comparable(run: RunDir) -> dict[str, Any]:
    """What a run's results are: every snapshot (without timings and spending), the best epoch, the ending."""
    epochs = {}
    for epoch in run.epochs():
        snapshot = run.snapshot(epoch)
        metrics = {k: v for k, v in snapshot.metrics.items() if k not in ("usage", "duration_s")}
        epochs[epoch] = {"functions": snapshot.functions.to_json(), "metrics": metrics,
                         "rollouts": snapshot.rollouts()}
    info = run.info()
    return {"epochs": epochs, "best.json": json.loads((run.path / "best.json").read_text()),
            "best": run.best_if_any(), "status": info["status"], "reason": info["reason"]}


def leftovers(run: RunDir) -> list[str]:
    return sorted(p.name for p in run.path.iterdir() if p.name.startswith(".") and p.name != ".lock")


@pytest.fixture
def server():
    with FakeOpenAI(world) as fake:
        yield fake


@pytest.fixture
def config(write_config, tmp_path, server) -> Path:
    data = write_problems(tmp_path / "problems.jsonl", PRODUCTS)
    return write_config(server.base_url, data, task={"train_size": 3, "test_size": 1},
                        optimizer={"epochs": 2}, llm={"concurrency": 1})


@pytest.mark.timeout(900)
def test_a_kill_at_every_write_then_resume_gives_the_uninterrupted_run(config, tmp_path):
    reference = comparable(api.train(config, ["output_dir=reference"]).run)
    assert reference["best"] == 1 and reference["status"] == "finished"
    killed_at = 0
    for k in range(1, 500):
        out = tmp_path / f"killed-{k}"
        process = subprocess.run(
            [sys.executable, "-c", KILLER, "train", str(config), "--set", f"output_dir={out}"],
            env={**os.environ, "KILL_AT_WRITE": str(k), "KILL_UNDER": str(out)},
            capture_output=True, text=True, timeout=120, start_new_session=True,
        )
        if process.returncode != -signal.SIGKILL:
            assert process.returncode == 0, process.stderr
            break  # the run has fewer than k writes
        killed_at += 1
        runs = find_runs(out)
        if not runs:
            continue  # killed before run.json existed: there is no run to resume, nothing is listed
        run = RunDir(runs[0])
        api.resume(run.path)
        assert comparable(run) == reference, f"killed at write {k}"
        assert leftovers(run) == [], f"killed at write {k}"
    assert killed_at > 30  # every write of the run was visited, then one uninterrupted pass


class Recorder:
    """A reporter that keeps what the console would show while the run waits for the endpoint."""

    def __init__(self) -> None:
        self.waits: list[str] = []

    def epoch_started(self, epoch: int, phase: str, tasks: int) -> None:
        pass

    def rollout_done(self, record: dict[str, Any], usage: Any) -> None:
        assert record["stop_reason"] != "llm_error"

    def epoch_done(self, metrics: dict[str, Any]) -> None:
        pass

    def waiting(self, message: str) -> None:
        self.waits.append(message)


def failing_first(fault: Fault, times: int = 1, which: tuple[str, ...] = ()) -> Any:
    """The world, except that each agent request (of the questions in `which`; all if empty) gets `fault`
    the first `times` times it is sent."""
    seen: dict[str, int] = {}
    lock = threading.Lock()

    def responder(body: dict[str, Any]) -> Any:
        key = json.dumps(body["messages"], sort_keys=True)
        if is_optimizer(body) or (which and question(body) not in which):
            return world(body)
        with lock:
            seen[key] = seen.get(key, 0) + 1
            failing = seen[key] <= times
        return fault if failing else world(body)

    return responder


SOME = tuple(p for p, _ in PRODUCTS[:2])  # at least one of them is among the 3 training questions


@pytest.mark.parametrize(
    ("fault", "settings"),
    [(Fault(503), {}), (Fault(429, retry_after=0.1), {}), (Fault(500), {}), (Fault(reset=True), {}),
     (Fault(200, delay_s=2.0), {"timeout_s": 0.5}), (Fault(malformed=True), {}),
     (Fault(body={"choices": [{"index": 0, "finish_reason": "stop"}]}), {})],
    ids=["503", "429", "500", "reset", "hang", "malformed", "no-message"],
)
def test_a_request_the_endpoint_failed_is_retried_later_and_never_scored_as_wrong(
        config, tmp_path, server, fault, settings):
    reference = comparable(api.train(config, ["output_dir=reference", "llm.cache=false"]).run)
    server.responder = failing_first(fault, times=2)
    recorder = Recorder()
    overrides = ["output_dir=faulty", "llm.cache=false", *(f"llm.{k}={v}" for k, v in settings.items())]
    run = api.train(config, overrides, reporter=recorder).run
    assert comparable(run) == reference  # same accuracies, same decisions, same optimizer prompts
    assert recorder.waits and "retrying" in recorder.waits[0] and "llm.max_outage_s" in recorder.waits[0]


def test_an_endpoint_down_past_max_outage_stops_the_run_as_failed_and_resume_completes_it(config, server):
    reference = comparable(api.train(config, ["output_dir=reference", "llm.cache=false"]).run)
    down = [True]
    server.responder = lambda body: Fault(503) if down[0] and question(body) in SOME else world(body)
    recorder = Recorder()
    outcome = api.train(config, ["output_dir=faulty", "llm.cache=false", "llm.max_outage_s=2"], reporter=recorder)
    info = outcome.run.info()
    assert outcome.status == "failed" and info["status"] == "failed"
    assert "kept failing" in info["reason"] and "llm.max_outage_s=2" in info["reason"] and "--resume" in info["reason"]
    assert outcome.run.epochs() == []  # the baseline never counted a failed request as a wrong answer
    assert len(recorder.waits) >= 2  # the console said it was waiting, with backoff
    down[0] = False
    api.resume(outcome.run.path)
    assert comparable(outcome.run) == reference
