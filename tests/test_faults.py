"""Faults from outside the program: a kill at any write, an endpoint that misbehaves, a full disk, Ctrl-C.
Each ends, after `--resume`, in the run an undisturbed process would have written, or in one clear line."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from agenttrain import api
from agenttrain.progress import PlainReporter
from agenttrain.rundir.directory import RunDir, find_runs
from tests.support.disk import fill, small_disk
from tests.support.fake_openai import FakeOpenAI, Fault
from tests.support.files import write_problems
from tests.support.kills import KILL_AT_EVERY_WRITE, comparable, leftovers
from tests.support.scripted import MULTIPLY, TERMINATE, add, is_optimizer, list_b, multiplying_agent, question

pytestmark = pytest.mark.slow

PRODUCTS = [(f"What is {a} times 3?", str(a * 3)) for a in range(2, 6)]

def optimizer(body: dict[str, Any]) -> Any:
    return TERMINATE if "multiply" in list_b(body) else add("multiply", MULTIPLY)


def world(body: dict[str, Any]) -> Any:
    return optimizer(body) if is_optimizer(body) else multiplying_agent(body)


_REFERENCE: dict[str, Any] = {}


def reference(config: Path) -> dict[str, Any]:
    """The undisturbed run of `config` (the same in every test of this module, so trained once)."""
    if not _REFERENCE:
        _REFERENCE.update(comparable(api.train(config, ["output_dir=reference"]).run))
    return _REFERENCE


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
def test_a_kill_at_every_write_then_resume_gives_the_uninterrupted_run(write_config, server, tmp_path):
    data = write_problems(tmp_path / "problems.jsonl", PRODUCTS)
    config = write_config(server.base_url, data, task={"train_size": 2, "test_size": 1}, optimizer={"epochs": 1},
                          sandbox={"warm_workers": 0})
    expected = comparable(api.train(config, ["output_dir=reference"]).run)
    assert expected["best"] == 1 and expected["status"] == "finished"
    driver = subprocess.run([sys.executable, "-c", KILL_AT_EVERY_WRITE, str(config), str(tmp_path / "killed")],
                            capture_output=True, text=True, timeout=800)
    assert driver.returncode == 0, driver.stderr
    completed_at = json.loads(driver.stdout.splitlines()[-1])["completed_at"]
    assert completed_at > 20  # every write of the run was visited, then one uninterrupted pass
    for k in range(1, completed_at):
        runs = find_runs(tmp_path / "killed" / f"killed-{k}")
        if runs:
            run = RunDir(runs[0])
            assert comparable(run) == expected, f"killed at write {k}"
            assert leftovers(run) == [], f"killed at write {k}"

class Recorder(PlainReporter):
    """The console's plain reporter, keeping what it showed while the run waited for the endpoint."""

    def __init__(self) -> None:
        super().__init__(Console(file=io.StringIO()))
        self.waits: list[str] = []

    def rollout_done(self, record: Any, usage: Any) -> None:
        assert record.stop_reason != "llm_error"
        super().rollout_done(record, usage)

    def waiting(self, message: str) -> None:
        self.waits.append(message)
        super().waiting(message)


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
    server.responder = failing_first(fault)
    recorder = Recorder()
    overrides = ["output_dir=faulty", "llm.cache=false", *(f"llm.{k}={v}" for k, v in settings.items())]
    run = api.train(config, overrides, reporter=recorder).run
    assert comparable(run) == reference(config)  # same accuracies, same decisions, same optimizer prompts
    assert recorder.waits and "retrying" in recorder.waits[0] and "llm.max_outage_s" in recorder.waits[0]


def test_an_optimizer_step_the_endpoint_failed_is_tried_again(config, server):
    failed: set[str] = set()

    def responder(body: dict[str, Any]) -> Any:
        key = json.dumps(body["messages"])
        if is_optimizer(body) and key not in failed:
            failed.add(key)
            return Fault(502)
        return world(body)

    server.responder = responder
    recorder = Recorder()
    run = api.train(config, ["output_dir=faulty", "llm.cache=false"], reporter=recorder).run
    assert comparable(run) == reference(config)
    assert any("the optimizer step" in wait for wait in recorder.waits)


def test_an_evaluation_retries_what_the_endpoint_failed_instead_of_scoring_it_wrong(config, server):
    run = api.train(config, ["output_dir=evaluated"]).run
    clean = api.eval_run(run.path, split="train", use_cache=False)
    server.responder = failing_first(Fault(503))
    recorder = Recorder()
    faulty = api.eval_run(run.path, split="train", use_cache=False, reporter=recorder)
    assert (faulty["accuracy"], faulty["errors"]) == (clean["accuracy"], 0) and clean["accuracy"] == 1.0
    assert recorder.waits


def test_an_endpoint_down_past_max_outage_stops_the_run_as_failed_and_resume_completes_it(config, server):
    down = [True]
    server.responder = lambda body: Fault(503) if down[0] and question(body) in SOME else world(body)
    recorder = Recorder()
    outcome = api.train(config, ["output_dir=faulty", "llm.cache=false", "llm.max_outage_s=2"], reporter=recorder)
    info = outcome.run.info()
    assert outcome.status == "failed" and info.status == "failed"
    assert "kept failing" in info.reason and "llm.max_outage_s=2" in info.reason and "--resume" in info.reason
    assert outcome.run.epochs() == []  # the baseline never counted a failed request as a wrong answer
    assert len(recorder.waits) >= 2  # the console said it was waiting, with backoff
    down[0] = False
    api.resume(outcome.run.path)
    assert comparable(outcome.run) == reference(config)


CLI = [sys.executable, "-c", "from agenttrain.cli import main; main()"]


def test_a_full_disk_fails_the_run_in_one_line_and_resume_after_freeing_space_completes_it(config, tmp_path):
    expected, failed_runs = reference(config), 0
    for leave_kb in (4, 24, 48, 96):  # the disk fills up at different writes of the run
        with small_disk(tmp_path / f"disk-{leave_kb}", 512) as disk:
            filler = fill(disk, leave_kb)
            process = subprocess.run([*CLI, "train", str(config), "--set", f"output_dir={disk / 'runs'}"],
                                     capture_output=True, text=True, timeout=300,
                                     env={**os.environ, "COLUMNS": "1000"})  # one line, however long
            if process.returncode == 0:
                continue
            [line] = [line for line in process.stderr.splitlines() if line.startswith("error:")]
            assert "No space left on device" in line and "Traceback" not in process.stderr
            runs = find_runs(disk / "runs")
            if not runs:  # not even the run's first files fit: nothing is left behind to resume
                assert line.startswith(f"error: cannot write {disk / 'runs'}/") and not any((disk / "runs").iterdir())
                continue
            failed_runs += 1
            run = RunDir(runs[0])
            assert line.startswith(f"error: cannot write {run.path}/")
            assert line.endswith(f"then continue with: agenttrain train --resume {run.path}")
            assert run.info().status == "failed" and "No space left on device" in run.info().reason
            assert leftovers(run) == []
            filler.unlink()
            assert api.resume(run.path).status == "finished"
            assert comparable(run) == expected
    assert failed_runs >= 2
