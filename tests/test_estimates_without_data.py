"""The paper's cost can be checked before any data is pulled: `--dry-run` of a paper config or sweep assumes the
configs' sizes and each data set's typical question length, and says so; a user's own task still needs its file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agenttrain.cli import app
from agenttrain.config import ConfigError
from tests.support.files import REPO

runner = CliRunner()


@pytest.fixture
def configs_without_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shipped configs in a clone where nothing was pulled (this checkout might hold data/math)."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    return tmp_path / "configs"


def dry_run(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--dry-run", "--json"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads(result.stdout)


@pytest.mark.slow
def test_a_paper_config_is_estimated_before_its_data_is_pulled_and_says_what_it_assumed(configs_without_data):
    estimate = dry_run("train", str(configs_without_data / "math-geometry.yaml"))
    assert estimate["train_tasks"] == 20
    [assumed] = estimate["assumed"]
    assert "data/math/test.jsonl is not there yet (agenttrain data pull math)" in assumed
    assert "20 train questions of 335 characters" in assumed  # MATH geometry's mean problem length
    text = runner.invoke(app, ["train", str(configs_without_data / "math-geometry.yaml"), "--dry-run"]).stdout
    assert "without the data: " in text


@pytest.mark.slow
def test_the_paper_sweep_is_estimated_before_any_data_is_pulled(configs_without_data, tmp_path):
    estimate = dry_run("sweep", str(configs_without_data / "paper" / "main.yaml"), "--out", str(tmp_path / "out"))
    assert len(estimate["jobs"]) == 18 and all(job["data_assumed"] for job in estimate["jobs"])
    assert estimate["total"]["requests"] == 21_540 and 200 < estimate["total"]["cost_usd"] < 300
    assert [note.split(":")[0] for note in estimate["assumed"]] == ["math", "tabmwp", "gaia"]
    assert not (tmp_path / "out").exists()  # an estimate writes nothing


def test_a_task_without_sizes_still_needs_its_data_file(configs_without_data):
    result = runner.invoke(app, ["train", str(configs_without_data / "own-task-local.yaml"), "--dry-run",
                                 "--set", "task.path=missing.jsonl", "--set", "task.train_size=null"])
    assert isinstance(result.exception, ConfigError)  # `main` prints it as one line and exits 2
    assert "task.path" in str(result.exception) and "missing.jsonl does not exist" in str(result.exception)
