"""The example run shipped in docs/example-run/ is what a newcomer opens first: small, labelled as made with
scripted LLMs, readable by every command that reads runs, and made again by the command its README names."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest
from typer.testing import CliRunner

from agenttrain.cli import app
from agenttrain.rundir.directory import RunDir
from tests.support.files import REPO
from tests.support.viewing import viewer

EXAMPLE = REPO / "docs" / "example-run"
runner = CliRunner()


@pytest.fixture
def example() -> RunDir:
    [path] = EXAMPLE.glob("example-days-*")
    return RunDir(path)


def cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.stdout


def test_the_example_run_is_small_and_says_how_it_was_made(example):
    size = sum(p.stat().st_size for p in example.path.rglob("*") if p.is_file())
    assert size < 1_000_000
    info = json.loads((example.path / "run.json").read_text())
    assert "tools/make_example_run.py" in info["example"] and "scripted" in info["example"]
    experiment = example.experiment()
    assert (experiment.agent.model, experiment.optimizer.model) == ("scripted-agent", "scripted-optimizer")
    assert "make example-run" in (EXAMPLE / "README.md").read_text()


def test_show_diff_export_and_runs_open_the_example(example):
    shown = cli("show", str(example.path))
    assert "rolled back" in shown and "accepted" in shown and "rejected: not available in the sandbox" in shown
    assert "prompt cut to fit" in shown
    assert "+    return (date.fromisoformat(end) - date.fromisoformat(start)).days" in \
        cli("diff", "epoch-1", "epoch-2", str(example.path))
    assert "def days_between(start, end):" in cli("export", str(example.path))
    assert example.path.name[:20] in cli("runs", str(EXAMPLE))


def test_the_viewer_opens_the_example(example):
    with viewer(EXAMPLE) as url:
        for page in ("/", f"/runs/{example.path.name}/", f"/runs/{example.path.name}/epochs/2",
                     f"/runs/{example.path.name}/epochs/2/tasks/d01", f"/runs/{example.path.name}/diff?a=1&b=2"):
            with urllib.request.urlopen(url + page, timeout=10) as response:
                assert response.status == 200, page


@pytest.mark.slow
def test_the_documented_command_makes_the_same_story_again(tmp_path):
    subprocess.run([sys.executable, str(REPO / "tools" / "make_example_run.py"), str(tmp_path)], check=True,
                   capture_output=True, timeout=600)
    [made] = tmp_path.glob("example-days-*")
    run = RunDir(made)
    assert [run.snapshot(e).metrics.status for e in run.epochs()] == ["baseline", "rolled_back", "accepted",
                                                                      "unchanged"]
    assert run.snapshot(2).functions.names == ["days_between"]
