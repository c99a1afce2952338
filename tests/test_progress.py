"""What a user sees while a run works: a dead endpoint stops it in seconds with one line; each phase gets a
line (rollouts, the optimizer thinking, the candidate's evaluation) with epoch k/N and run totals that never
reset; retries show while they happen; a resumed run says what it reused."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from agenttrain import api
from agenttrain.cli import app
from agenttrain.progress import RichReporter
from tests.support.fake_openai import FakeOpenAI, Fault
from tests.support.files import write_problems
from tests.support.scripted import MULTIPLY, TERMINATE, add, is_optimizer, list_b, multiplying_agent
from tests.test_resume import killed_run, slow_world  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-c", "from agenttrain.cli import main; main()"]
PRODUCTS = [("What is 6 times 7?", "42"), ("What is 5 times 8?", "40"), ("What is 3 times 9?", "27")]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The command as a user runs it, its stderr not a terminal (so the plain reporter draws it)."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def respond(body):
    if is_optimizer(body):
        return TERMINATE if "multiply" in list_b(body) else add("multiply", MULTIPLY)
    return multiplying_agent(body)


def test_train_against_a_port_with_nothing_listening_stops_within_seconds_with_one_line(write_config, tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    config = write_config(url, write_problems(tmp_path / "problems.jsonl", PRODUCTS), llm={"max_retries": 5})
    started = time.monotonic()
    in_process = CliRunner().invoke(app, ["train", str(config)])
    assert time.monotonic() - started < 10  # our part; the old retries took 50-60 s before saying anything
    assert in_process.exit_code != 0 and url in str(in_process.exception)
    result = cli("train", str(config), cwd=tmp_path)  # as a user sees it (Python's start-up included)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: cannot reach the agent endpoint")
    assert url in result.stderr and "Connect" in result.stderr  # the URL and the cause
    assert not (tmp_path / "runs").exists()  # no run directory, no empty `show`


def on_a_terminal(*args: str, cwd: Path) -> str:
    """The command's output on a pseudo-terminal (so the live display is drawn), colour codes removed."""
    leader, follower = pty.openpty()
    process = subprocess.Popen([*CLI, *args], stdin=follower, stdout=follower, stderr=follower, cwd=cwd)
    os.close(follower)
    output = b""
    while select.select([leader], [], [], 30)[0]:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the process closed the terminal
            break
        if not chunk:
            break
        output += chunk
    process.wait(timeout=30)
    os.close(leader)
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode())


def test_an_error_on_a_terminal_is_one_line_with_no_blank_line_before_it(write_config, tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    config = write_config(url, write_problems(tmp_path / "problems.jsonl", PRODUCTS))
    assert on_a_terminal("train", str(config), cwd=tmp_path).startswith(f"error: cannot reach the agent endpoint {url}")


def test_validate_checks_the_endpoint_unless_offline(write_config, tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    config = write_config(url, write_problems(tmp_path / "problems.jsonl", PRODUCTS))
    checked = cli("validate", str(config), cwd=tmp_path)
    assert checked.returncode == 2 and url in checked.stderr
    offline = cli("validate", str(config), "--offline", cwd=tmp_path)
    assert offline.returncode == 0 and "2 train, 1 test examples" in offline.stdout


def test_a_rejected_key_stops_before_any_rollout(write_config, tmp_path):
    with FakeOpenAI(respond, models_status=401) as server:
        config = write_config(server.base_url, write_problems(tmp_path / "problems.jsonl", PRODUCTS))
        result = cli("train", str(config), cwd=tmp_path)
    assert result.returncode == 2 and "rejected the API key (HTTP 401)" in result.stderr
    assert server.model_lists == 1 and server.requests == []  # one preflight per endpoint, no rollout sent


def test_each_phase_gets_a_line_and_run_totals_only_grow(write_config, tmp_path):
    with FakeOpenAI(respond) as server:
        config = write_config(server.base_url, write_problems(tmp_path / "problems.jsonl", PRODUCTS),
                              optimizer={"epochs": 2}, task={"train_size": 3, "test_size": 0})
        result = cli("train", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    expected_in_order = [
        "task: 3 train, 0 test examples; epochs 0-2",
        "epoch 0/2 rollouts: 3/3 done, acc 0.00",
        "epoch 0/2: train accuracy 0.000, baseline, 0 actions applied, 0 functions",
        "epoch 1/2 optimizer thinking (up to 3 actions) ...",
        "epoch 1/2 optimizer: 1 action proposed, 1 applied",
        "epoch 1/2 evaluating the candidate: 3/3 done, acc 1.00",
        "epoch 1/2: train accuracy 1.000, accepted, 1 action applied, 1 function",
        "epoch 2/2 optimizer: no change proposed",
        "epoch 2/2: train accuracy 1.000, unchanged, 0 actions applied, 1 function",
    ]
    position = 0
    for wanted in expected_in_order:
        position = next(i for i in range(position, len(lines)) if lines[i].startswith(wanted))
    totals = [line for line in lines if line.startswith("run total:")]
    rollouts = [int(line.split("run total: ")[1].split(" ")[0]) for line in totals]
    assert rollouts == [3, 6, 6]  # totals for the run, not reset at each epoch
    assert "run total: 6 rollouts" in totals[-1] and "0 retries" in totals[-1]


def test_an_extended_run_counts_the_rollouts_of_its_earlier_epochs_in_its_totals(write_config, tmp_path):
    with FakeOpenAI(respond) as server:
        config = write_config(server.base_url, write_problems(tmp_path / "problems.jsonl", PRODUCTS),
                              optimizer={"epochs": 1}, task={"train_size": 3, "test_size": 0})
        first = cli("train", str(config), cwd=tmp_path)
        [run] = (tmp_path / "runs").iterdir()
        extended = cli("train", "--resume", str(run), "--set", "optimizer.epochs=2", cwd=tmp_path)
    assert "ran 1 epoch)" in first.stdout and extended.returncode == 0, extended.stderr
    assert "epoch 2/2 optimizer: no change proposed" in extended.stderr  # nothing new was run in this session
    assert [line for line in extended.stderr.splitlines() if line.startswith("run total:")][-1].startswith(
        "run total: 6 rollouts")  # the run's own, as its tokens and cost are


def test_retries_show_while_they_happen(write_config, tmp_path):
    failures = {"left": 2}

    def flaky(body):
        if not is_optimizer(body) and failures["left"] > 0:
            failures["left"] -= 1
            return Fault(status=503)
        return respond(body)

    with FakeOpenAI(flaky) as server:
        config = write_config(server.base_url, write_problems(tmp_path / "problems.jsonl", PRODUCTS),
                              optimizer={"epochs": 0}, llm={"max_retries": 3, "concurrency": 1})
        result = cli("train", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "endpoint: 1 failed request (agent), retrying; waiting" in result.stderr
    assert "2 retries" in result.stderr.splitlines()[-1]


def test_the_rich_display_prints_the_same_phase_lines_on_a_terminal(write_config, tmp_path):
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=200)
    with FakeOpenAI(respond) as server:
        config = write_config(server.base_url, write_problems(tmp_path / "problems.jsonl", PRODUCTS),
                              optimizer={"epochs": 1})
        with RichReporter(console) as reporter:
            api.train(config, reporter=reporter)
    text = screen.getvalue()
    for wanted in ("epoch 0/1 rollouts: 2/2 done", "epoch 1/1 optimizer: 1 action proposed, 1 applied",
                   "epoch 1/1 evaluating the candidate: 2/2 done", "run total: 4 rollouts"):
        assert wanted in text


def test_a_resumed_run_says_how_many_rollouts_it_reused(write_config, tmp_path, slow_world):  # noqa: F811
    run = killed_run(write_config, slow_world, tmp_path, 2)
    journaled = sum(1 for e in run.events() if e["event"] == "rollout")
    result = cli("train", "--resume", str(run.path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "resuming at epoch 0" in result.stderr
    # the bar counts what was reused, so its accuracy is the epoch's summary's
    assert "epoch 0/1 rollouts: 6/6 done, acc 0.00" in result.stderr
    assert "epoch 0/1: train accuracy 0.000" in result.stderr
    assert f"({journaled} reused)" in result.stderr
    assert f"run total: 6 rollouts ({journaled} reused)" in result.stderr
