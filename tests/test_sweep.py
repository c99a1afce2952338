"""`agenttrain sweep` against the fake server: configs x seeds as child processes, the three result files with
the numbers `eval` gives, and a killed sweep that a rerun finishes without repeating finished runs."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from agenttrain.cli import app
from agenttrain.rundir.directory import RunDir, find_runs
from agenttrain.sweeping import plan_sweep
from tests.support.fake_openai import FakeOpenAI, Fault
from tests.support.files import write_problems
from tests.support.scripted import MULTIPLY, TERMINATE, add, agent_reply, is_optimizer, list_b, multiplying_agent

PROBLEMS = [(f"What is {a} times {b}?", str(a * b)) for a, b in [(6, 7), (5, 8), (3, 9), (4, 4), (7, 2)]]
CLI = [sys.executable, "-c", "from agenttrain.cli import main; main()"]
runner = CliRunner()


def responder(body):
    if is_optimizer(body):
        return TERMINATE if "multiply" in list_b(body) else add("multiply", MULTIPLY)
    return agent_reply(body, multiplying_agent(body))


def invoke(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads(result.stdout)


def two_configs(write_config, server: FakeOpenAI, tmp_path: Path) -> list[Path]:
    """An assistant config and a ReAct config, each trained for one epoch on 2 of the 5 problems."""
    data = write_problems(tmp_path / "problems.jsonl", PROBLEMS)
    paths = []
    for name, agent in (("assistant", "assistant"), ("react", "react")):
        config = write_config(server.base_url, data, name=name, agent={"type": agent},
                              task={"train_size": 2, "test_size": 3}, optimizer={"epochs": 1})
        paths.append(config.rename(tmp_path / f"{name}.yaml"))
    return paths


@pytest.mark.slow
def test_a_sweep_of_two_configs_and_two_seeds_writes_the_numbers_eval_gives(write_config, tmp_path):
    with FakeOpenAI(responder) as server:
        configs = two_configs(write_config, server, tmp_path)
        result = invoke("sweep", *map(str, configs), "--out", str(tmp_path / "sweep"), "--seeds", "0,1",
                        "--jobs", "2")
        rows = result["rows"]
        assert sorted(r["name"] for r in rows) == ["assistant-s0", "assistant-s1", "react-s0", "react-s1"]
        for row in rows:
            assert row["status"] == "finished" and row["error"] is None
            before = invoke("eval", row["run"], "--epoch", "0")
            after = invoke("eval", row["run"], "--epoch", "best")
            assert (row["before"], row["before_ci95"]) == (before["accuracy"], before["ci95"])
            assert (row["after"], row["after_ci95"]) == (after["accuracy"], after["ci95"])
            assert row["difference"] == pytest.approx(after["accuracy"] - before["accuracy"])
            assert row["n"] == after["n"] == 3 and row["seed"] == int(row["name"][-1])

    # the seed is the split: the two seeds of a config trained on different tasks
    splits = {row["name"]: {r.id for r in RunDir(Path(row["run"])).snapshot(0).rollouts()} for row in rows}
    assert splits["assistant-s0"] != splits["assistant-s1"]

    out = tmp_path / "sweep"
    stored = json.loads((out / "results.json").read_text())["rows"]
    assert stored == rows
    with open(out / "results.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [(r["name"], float(r["after"]), float(r["after_ci_low"])) for r in table] == \
        [(r["name"], r["after"], r["after_ci95"][0]) for r in rows]
    markdown = (out / "results.md").read_text()
    assert "Wilson score" in markdown and "paired" in markdown and "McNemar" in markdown
    assert all(row["name"] in markdown for row in rows)


@pytest.mark.slow
def test_a_killed_sweep_rerun_finishes_without_repeating_finished_runs(write_config, tmp_path):
    with FakeOpenAI(responder, latency_s=0.3) as server:
        configs = two_configs(write_config, server, tmp_path)
        out = tmp_path / "sweep"
        sweep = subprocess.Popen([*CLI, "sweep", *map(str, configs), "--out", str(out), "--seeds", "0,1"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        first = wait_for_second_run(out / "runs", sweep)
        os.killpg(sweep.pid, signal.SIGKILL)  # the sweep and its workers, at once, as a lost terminal would
        sweep.wait()
        finished_events = (first.path / "events.jsonl").read_text()
        finished_evals = sorted(p.name for p in first.evals_dir.iterdir())

        result = invoke("sweep", *map(str, configs), "--out", str(out), "--seeds", "0,1")

    assert first.info().name not in result["ran"]  # complete: not even started again
    assert (first.path / "events.jsonl").read_text() == finished_events
    assert sorted(p.name for p in first.evals_dir.iterdir()) == finished_evals
    runs = [RunDir(p) for p in find_runs(out / "runs")]
    assert sorted(r.info().name for r in runs) == ["assistant-s0", "assistant-s1", "react-s0", "react-s1"]
    resumed = [r for r in runs if any(e["event"] == "resume" for e in r.events())]
    assert len(resumed) == 1 and resumed[0].info().name == "assistant-s1"
    assert all(row["status"] == "finished" and row["difference"] is not None for row in result["rows"])


def wait_for_second_run(runs_dir: Path, sweep: subprocess.Popen, timeout_s: float = 120) -> RunDir:
    """The first run once it is complete (trained and evaluated), as soon as the second has journaled a rollout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert sweep.poll() is None, sweep.stderr.read().decode()
        runs = [RunDir(p) for p in find_runs(runs_dir)]
        if len(runs) == 2 and any(e["event"] == "rollout" for e in runs[1].events()):
            assert (runs[0].evals_dir / "test-epoch-0.json").exists()
            return runs[0]
        time.sleep(0.05)
    raise AssertionError(f"the sweep did not start a second run within {timeout_s}s")


def test_a_sweep_file_names_configs_relative_to_itself_with_their_own_settings(write_config, tmp_path):
    with FakeOpenAI(responder) as server:
        configs = two_configs(write_config, server, tmp_path)
        folder = tmp_path / "paper"
        folder.mkdir()
        (folder / "ablation.yaml").write_text(yaml.safe_dump({"description": "test", "runs": [
            {"config": "../assistant.yaml", "name": "full"},
            {"config": "../assistant.yaml", "name": "at-once", "set": ["optimizer.method=all_at_once"]},
        ]}))
        estimate = invoke("sweep", str(folder / "ablation.yaml"), "--out", str(tmp_path / "out"), "--dry-run")
        assert [j["name"] for j in estimate["jobs"]] == ["full-s0", "at-once-s0"]
        assert estimate["total"]["requests"] == sum(j["requests"] for j in estimate["jobs"]) > 0
        assert not server.requests  # a dry run sends nothing
        assert not (tmp_path / "out").exists()

        bad = runner.invoke(app, ["sweep", str(configs[0]), "--out", str(tmp_path / "out"), "--seeds", "a,b"])
        assert bad.exit_code != 0 and "--seeds" in str(bad.exception)


@pytest.mark.parametrize("sweep_file", sorted((Path(__file__).parents[1] / "configs" / "paper").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_the_shipped_paper_sweeps_are_valid(sweep_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stand_in = tmp_path / "data"
    stand_in.mkdir()  # the data sets are downloads; every config is checked with a folder in their place
    jobs = plan_sweep([sweep_file], tmp_path / "out", None, [f"task.path={stand_in}"])
    assert len({job.id for job in jobs}) == len(jobs) > 0
    for job in jobs:
        assert all(Path(path).is_file() for path in [job.config, *job.transfer])


@pytest.mark.slow
def test_a_failed_run_is_a_row_with_its_reason_and_the_sweep_exits_1(write_config, tmp_path):
    with FakeOpenAI(lambda body: Fault(status=500)) as server:
        data = write_problems(tmp_path / "problems.jsonl", PROBLEMS)
        config = write_config(server.base_url, data, name="down", optimizer={"epochs": 1})
        result = runner.invoke(app, ["sweep", str(config), "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 1
    [row] = json.loads(result.stdout)["rows"]
    assert row["status"] == "failed" and row["after"] is None
    assert "training ended as 'failed'" in row["error"] and "fake error 500" in row["error"]
    assert "training ended as 'failed'" in (tmp_path / "out" / "results.md").read_text()
