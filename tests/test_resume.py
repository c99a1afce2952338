"""Crash safety: a run killed mid-epoch resumes without re-running journaled rollouts; Ctrl-C stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agenttrain import api
from agenttrain.config import ConfigError
from agenttrain.errors import UserError
from agenttrain.readback.listing import list_runs
from agenttrain.rundir.directory import RunDir, find_runs
from agenttrain.rundir.records import Best
from tests.support.fake_openai import FakeOpenAI
from tests.support.files import write_problems
from tests.support.run_factory import experiment, story_run
from tests.support.scripted import is_optimizer, multiplying_agent, question

PROBLEMS = [(f"What is {a} times 3?", str(a * 3)) for a in range(2, 8)]
CLI = [sys.executable, "-c", "from agenttrain.cli import main; main()"]


def start_training(config: Path) -> subprocess.Popen:
    """In its own process group, as a terminal runs a command, so that Ctrl-C can reach all its processes."""
    return subprocess.Popen([*CLI, "train", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def wait_for_rollouts(runs: Path, count: int, timeout_s: float = 30) -> RunDir:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for path in find_runs(runs):
            run = RunDir(path)
            if sum(e["event"] == "rollout" for e in run.events()) >= count:
                return run
        time.sleep(0.05)
    raise AssertionError(f"no run journaled {count} rollouts within {timeout_s}s")


class Gate:
    """Answers the agent's requests, holding every one after the first `open_for` until released: a process
    killed once it journaled that many rollouts is killed mid-epoch however loaded the machine is."""

    def __init__(self) -> None:
        self.open_for: int | None = None
        self.answered = 0
        self.lock = threading.Lock()
        self.released = threading.Event()

    def __call__(self, body):
        if is_optimizer(body):
            return "TERMINATE"
        with self.lock:
            self.answered += 1
            held = self.open_for is not None and self.answered > self.open_for
        if held:
            self.released.wait(60)
        return multiplying_agent(body)


@pytest.fixture
def slow_world():
    gate = Gate()
    server = FakeOpenAI(gate, latency_s=0.2)
    server.gate = gate
    with server:
        yield server
        gate.released.set()


def config_for(write_config, server: FakeOpenAI, tmp_path: Path) -> Path:
    data = write_problems(tmp_path / "problems.jsonl", PROBLEMS)
    return write_config(server.base_url, data, task={"train_size": 6, "test_size": 0},
                        llm={"concurrency": 1, "cache": False}, optimizer={"epochs": 1})


def killed_run(write_config, server: FakeOpenAI, tmp_path: Path, after_rollouts: int) -> RunDir:
    """A training process SIGKILLed once it has journaled `after_rollouts` rollouts (and, against a gated server,
    before it could journal more)."""
    gate = getattr(server, "gate", None)
    if gate is not None:
        gate.open_for = after_rollouts
    process = start_training(config_for(write_config, server, tmp_path))
    run = wait_for_rollouts(tmp_path / "runs", after_rollouts)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    if gate is not None:
        gate.open_for = None
        gate.released.set()
    return run


@pytest.mark.slow
def test_resume_after_sigkill_runs_only_the_rollouts_that_were_not_journaled(write_config, tmp_path, slow_world):
    run = killed_run(write_config, slow_world, tmp_path, 2)
    journaled = {e["record"]["question"] for e in run.events() if e["event"] == "rollout"}
    assert run.info().status == "running" and run.epochs() == []  # killed: no half-written snapshot

    slow_world.requests.clear()
    outcome = api.resume(run.path)
    asked = {question(b) for b in slow_world.requests if not is_optimizer(b)}
    assert outcome.status == "finished"
    assert asked == {p for p, _ in PROBLEMS} - journaled  # nothing journaled was asked again
    records = run.snapshot(0).rollouts()
    assert sorted(r.question for r in records) == sorted(p for p, _ in PROBLEMS)
    assert run.epochs() == [0, 1]


@pytest.mark.slow
def test_ctrl_c_stops_gracefully_with_status_interrupted(write_config, tmp_path, slow_world):
    config = config_for(write_config, slow_world, tmp_path)
    process = start_training(config)
    run = wait_for_rollouts(tmp_path / "runs", 1)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130  # what shells report for Ctrl-C; 2 is a config error
    assert "--resume" in stderr.decode()
    assert "Traceback" not in stderr.decode()
    assert run.info().status == "interrupted"
    assert api.resume(run.path).status == "finished"
    clean = api.train(config, [f"output_dir={tmp_path / 'clean'}"]).run

    def outcome(run: RunDir) -> list[list[tuple[str, bool]]]:
        return [sorted((r.question, r.correct) for r in run.snapshot(e).rollouts()) for e in run.epochs()]

    assert outcome(run) == outcome(clean) and run.best_if_any() == clean.best_if_any()


@pytest.mark.slow
def test_resume_refuses_a_changed_config(write_config, tmp_path, slow_world):
    run = killed_run(write_config, slow_world, tmp_path, 1)
    text = (run.path / "config.yaml").read_text().replace("max_turns: 4", "max_turns: 5")
    (run.path / "config.yaml").write_text(text)
    with pytest.raises(ConfigError, match="was edited and changes what the run's results depend on"):
        api.resume(run.path)
    assert json.loads((run.path / "run.json").read_text())["status"] == "running"


@pytest.mark.slow
def test_a_killed_run_resumes_on_a_moved_endpoint_and_counts_everything_it_spent(write_config, tmp_path, slow_world):
    run = killed_run(write_config, slow_world, tmp_path, 2)
    before_kill = len(slow_world.requests)
    with FakeOpenAI(lambda body: "TERMINATE" if is_optimizer(body) else multiplying_agent(body)) as moved:
        outcome = api.resume(run.path, [f"llm.base_url={moved.base_url}", "budget.max_usd=5"])
        after = len(moved.requests)
    assert outcome.status == "finished" and after > 0
    assert run.experiment().llm.base_url == moved.base_url  # the run now records where it continued
    counted = sum(usage["requests"] for usage in run.info().usage.values())
    # the 2 rollouts journaled before the kill are counted; nothing beyond what the two servers received is
    assert after + 2 <= counted <= after + before_kill
    with pytest.raises(ConfigError, match=r"agent\.model=other changes what the run's results depend on"):
        api.resume(run.path, ["agent.model=other"])


@pytest.mark.slow
def test_one_process_at_a_time_trains_a_run_and_a_killed_one_is_listed_as_killed(write_config, tmp_path, slow_world):
    config = config_for(write_config, slow_world, tmp_path)
    process = start_training(config)
    run = wait_for_rollouts(tmp_path / "runs", 1)
    with pytest.raises(UserError, match=f"process {process.pid} is training this run"):
        api.resume(run.path)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    [listed] = list_runs(tmp_path / "runs")
    assert listed.status == "killed"  # run.json still says running; the lock's process is gone


def test_a_stale_lock_naming_a_live_unrelated_process_does_not_block_the_run(tmp_path):
    run = RunDir.create(experiment(tmp_path))
    (run.path / ".lock").write_text(str(os.getppid()))  # a killed trainer's pid, since reused by a live process
    with run.lock():
        assert run.locked_by() == os.getpid()
    assert run.locked_by() is None


LOCKER = """
import sys, time
from pathlib import Path
from agenttrain.errors import UserError
from agenttrain.rundir.directory import RunDir
try:
    with RunDir(Path(sys.argv[1])).lock():
        print("locked", flush=True)
        time.sleep(1.5)
except UserError as exc:
    print(exc, flush=True)
"""


@pytest.mark.slow
def test_exactly_one_of_several_racing_processes_takes_the_run(tmp_path):
    run = RunDir.create(experiment(tmp_path))
    (run.path / ".lock").write_text("999999999")  # left by a process that was killed
    racers = [subprocess.Popen([sys.executable, "-c", LOCKER, str(run.path)], stdout=subprocess.PIPE, text=True)
              for _ in range(4)]
    outputs = [racer.communicate(timeout=60)[0] for racer in racers]
    assert sum(output.startswith("locked") for output in outputs) == 1, outputs
    assert all("is training this run" in output for output in outputs if not output.startswith("locked"))


def test_a_kill_between_a_snapshot_and_best_json_cannot_leave_a_stale_best_epoch(tmp_path):
    run = story_run(tmp_path)
    # best.json as it was before epoch 3's snapshot was renamed into place, when the process was killed
    run.set_best(Best(epoch=0, train_accuracy=0.25, reason="baseline"))
    assert run.best_if_any() == 3  # what `show`, `eval --epoch best` and `runs` use
    [listed] = list_runs(run.path.parent)
    assert (listed.best_epoch, listed.best_train_accuracy) == (3, 0.75)
