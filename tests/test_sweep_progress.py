"""A sweep shows its progress while it runs: runs done, training (with their epochs), evaluating, failed and left,
the spend and an ETA, read from the sweep's folder as the jobs write it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agenttrain.rundir.directory import RunDir, write_json_atomic
from agenttrain.sweeping import plan_sweep
from agenttrain.sweeping.runners import JobOutcome
from agenttrain.sweeping.watch import SweepWatch
from tests.support.fake_openai import FakeOpenAI
from tests.support.files import write_problems
from tests.support.run_factory import rollout, save_epoch, save_eval, usage
from tests.test_sweep import PROBLEMS, responder, two_configs

CLI = [sys.executable, "-c", "from agenttrain.cli import main; main()"]


def planned(write_config, tmp_path: Path, names: list[str]) -> tuple[Path, list]:
    """A sweep folder as `agenttrain sweep` leaves it once planned: OUT/sweep.json, no run yet."""
    data = write_problems(tmp_path / "problems.jsonl", PROBLEMS)
    configs = [write_config("http://127.0.0.1:9/v1", data, name=name, task={"train_size": 2, "test_size": 2},
                            optimizer={"epochs": 3}).rename(tmp_path / f"{name}.yaml") for name in names]
    out = tmp_path / "sweep"
    jobs = plan_sweep(configs, out, None, [])
    write_json_atomic(out / "sweep.json", {"jobs": [job.to_dict() for job in jobs]})
    return out, jobs


def trained(job, epochs: int, status: str = "finished") -> RunDir:
    run = RunDir.create(job.experiment())
    for epoch in range(epochs):
        save_epoch(run, epoch, [], "baseline" if epoch == 0 else "unchanged", [rollout("t1", True)], 1.0,
                   spent=usage(1000), best_epoch=0)
    run.update_info(status=status, epochs_done=epochs, usage=usage(epochs * 1000))
    return run


@pytest.mark.slow
def test_the_status_counts_runs_done_training_evaluating_failed_and_left(write_config, tmp_path):
    out, (done, training, evaluating, failing, _waiting) = planned(write_config, tmp_path, ["a", "b", "c", "d", "e"])
    finished = trained(done, 4)
    save_eval(finished, "test", 0, {"q1": True, "q2": False}, cost=0.25)
    trained(evaluating, 4)  # trained, its evaluations not written yet
    watch = SweepWatch(out)
    watch.ended(JobOutcome(failing, False, "the endpoint refused the key"))
    with trained(training, 2, status="running").lock():  # a process is training it
        status = watch.status()
    assert (status.total, status.done, status.failed, status.left) == (5, 1, 1, 1)
    assert status.training == ["b-s0 epoch 1/3"] and status.evaluating == ["c-s0"]
    assert status.spent_usd == pytest.approx(4 + 2 + 4 + 0.25)  # $1 per thousand tokens
    assert status.line().startswith("sweep: 1 of 5 runs done, 1 training (b-s0 epoch 1/3), 1 evaluating (c-s0), "
                                    "1 left, 1 failed; $10.25 spent; ETA ")


def test_an_earlier_invocations_job_list_is_not_taken_for_this_ones(write_config, tmp_path):
    out, _ = planned(write_config, tmp_path, ["a"])
    old = (out / "sweep.json").stat().st_mtime - 60
    os.utime(out / "sweep.json", (old, old))
    assert SweepWatch(out).status().total == 0  # until this invocation has written its own


@pytest.mark.slow
def test_a_sweep_prints_its_progress_and_ends_with_every_run_done(write_config, tmp_path):
    with FakeOpenAI(responder) as server:
        configs = two_configs(write_config, server, tmp_path)
        result = subprocess.run([*CLI, "sweep", *map(str, configs), "--out", str(tmp_path / "out"), "--jobs", "2"],
                                capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    status = [line for line in result.stderr.splitlines() if line.startswith("sweep: ")]
    assert status and status[-1].startswith("sweep: 2 of 2 runs done, 0 left; $0.00 spent; ETA ")
    assert json.loads((tmp_path / "out" / "sweep.json").read_text())["jobs"]
