"""`agenttrain runs`: every run under a folder with its status, best epoch, test accuracy and cost."""

from __future__ import annotations

import contextlib
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agenttrain.cli import app
from agenttrain.errors import UserError
from agenttrain.rundir.directory import RunDir
from tests.support.run_factory import save_eval, story_run

runner = CliRunner()


def listed(*args: str) -> dict:
    result = runner.invoke(app, ["runs", *args, "--json"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads(result.stdout)


def age(run: RunDir, seconds_ago: float) -> None:
    """Runs are listed oldest first by start time (folder time when run.json is damaged); set both, not sleep."""
    stamp = time.time() - seconds_ago
    with contextlib.suppress(UserError):
        started = datetime.fromtimestamp(stamp, timezone.utc).isoformat(timespec="seconds")
        run.update_info(started=started)
    os.utime(run.path, (stamp, stamp))


@pytest.fixture
def three_runs(tmp_path: Path) -> list[RunDir]:
    evaluated = story_run(tmp_path, "evaluated")
    plain = story_run(tmp_path, "plain", evaluated=False)
    damaged = story_run(tmp_path, "damaged", evaluated=False)
    (damaged.path / "run.json").write_text("{ not json")
    for seconds, run in zip((300, 200, 100), (evaluated, plain, damaged), strict=True):
        age(run, seconds)
    return [evaluated, plain, damaged]


def test_lists_every_run_oldest_first_with_its_figures(tmp_path, three_runs):
    evaluated, plain, damaged = three_runs
    runs = listed(str(tmp_path / "runs"))["runs"]
    assert [r["run"] for r in runs] == [str(evaluated.path), str(plain.path), str(damaged.path)]
    first = runs[0]
    assert (first["name"], first["status"], first["epochs"]) == ("evaluated", "finished", 5)
    assert (first["best_epoch"], first["best_train_accuracy"]) == (3, 0.75)
    assert (first["test_epoch"], first["test_accuracy"]) == (3, 0.8)
    assert first["cost_usd"] == pytest.approx(15 + 0.25 + 0.5)  # training plus both evaluations
    assert (runs[1]["test_accuracy"], runs[1]["cost_usd"]) == (None, pytest.approx(15))


def test_a_damaged_run_is_listed_with_its_error(tmp_path, three_runs):
    damaged = listed(str(tmp_path / "runs"))["runs"][2]
    assert damaged["status"] == "unreadable" and "run.json: damaged JSON" in damaged["error"]


def test_test_accuracy_falls_back_to_the_latest_evaluated_epoch(tmp_path):
    run = story_run(tmp_path, evaluated=False)
    save_eval(run, "test", 1, {"a": True, "b": False})
    save_eval(run, "test", 2, {"a": False, "b": False})
    save_eval(run, "test", 3, {"a": True, "b": True}, prefix="transfer-geometry-")  # another task: not "test"
    [summary] = listed(str(tmp_path / "runs"))["runs"]
    assert (summary["test_epoch"], summary["test_accuracy"]) == (2, 0.0)


def test_the_default_folder_is_runs_in_the_working_directory(tmp_path, monkeypatch):
    story_run(tmp_path)
    monkeypatch.chdir(tmp_path)
    found = listed()
    assert found["directory"] == "runs" and len(found["runs"]) == 1


def test_table_shows_one_row_per_run(tmp_path, three_runs):
    result = runner.invoke(app, ["runs", str(tmp_path / "runs")])
    assert result.exit_code == 0
    for name in ("evaluated-", "plain-", "damaged-"):  # long names may fold in a narrow terminal
        assert name in result.stdout
    assert "0.750 @3" in result.stdout and "0.800" in result.stdout  # best train accuracy @ its epoch; test
    assert "unreadable" in result.stdout and "damaged JSON" in result.stdout


def test_an_empty_folder_lists_nothing_and_a_missing_one_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    assert listed(str(tmp_path / "empty"))["runs"] == []
    result = runner.invoke(app, ["runs", str(tmp_path / "missing")])
    assert isinstance(result.exception, UserError) and "no such directory" in str(result.exception)


def test_help_shows_an_example():
    result = runner.invoke(app, ["runs", "--help"])
    assert result.exit_code == 0 and "Example: agenttrain runs" in result.stdout
