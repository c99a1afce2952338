"""The run directory format: runs written by older versions still open; newer formats are refused clearly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agenttrain.cli import app
from agenttrain.errors import UserError
from agenttrain.rundir.directory import RunDir
from agenttrain.rundir.records import FORMAT_VERSION, RECORDS
from agenttrain.rundir.records_doc import NESTED, render
from tests.support.fake_openai import FakeOpenAI
from tests.support.run_factory import story_run
from tests.support.scripted import agent_reply, multiplying_agent

FIXTURES = Path(__file__).parent / "fixtures"
runner = CliRunner()


def format_1_run(tmp_path: Path) -> RunDir:
    """A copy of the run that the code before run format 2 wrote, with its placeholders made real paths."""
    path = tmp_path / "runs" / "format1-20261130-055753"
    shutil.copytree(FIXTURES / "run-format-1", path)
    shutil.copy(FIXTURES / "run-format-1-problems.jsonl", tmp_path / "problems.jsonl")
    for file in (path / "config.yaml", path / "evals" / "test-epoch-1.json"):
        text = file.read_text(encoding="utf-8").replace("@RUN@", str(path)).replace("@FIXTURES@", str(tmp_path))
        file.write_text(text, encoding="utf-8")
    return RunDir.open(path)


def cli(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads(result.stdout)


def test_a_format_1_run_is_upgraded_in_memory_and_left_as_it_was_on_disk(tmp_path):
    run = format_1_run(tmp_path)
    stored = (run.path / "run.json").read_text()
    info = run.info()
    assert (run.format_version, info.format_version) == (1, FORMAT_VERSION)
    assert info.config_hash is None  # hashed a config schema this version no longer has
    assert info.status == "finished" and info.usage and info.usage["agent"]["requests"] == 6
    assert run.snapshot(1).metrics.actions[0].action == "add_function"
    assert (run.path / "run.json").read_text() == stored


@pytest.mark.slow
def test_a_format_1_run_opens_in_show_diff_report_and_runs(tmp_path):
    run = format_1_run(tmp_path)
    shown = cli("show", str(run.path))
    assert [e["status"] for e in shown["epochs"]] == ["baseline", "accepted", "unchanged"]
    assert shown["best_epoch"] == 1
    diff = cli("diff", "epoch-0", "epoch-1", "--run", str(run.path))
    assert [f["name"] for f in diff["added"]] == ["multiply"] and diff["fixed"] == 2
    report = cli("report", str(run.path))
    text = Path(report["report"]).read_text()
    assert "- best epoch: **1**" in text and "multiply" in text
    listed = cli("runs", str(tmp_path / "runs"))["runs"][0]
    assert (listed["status"], listed["best_epoch"], listed["test_accuracy"]) == ("finished", 1, 1.0)


@pytest.mark.slow
def test_a_format_1_run_can_be_evaluated_again(tmp_path, monkeypatch):
    run = format_1_run(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    with FakeOpenAI(lambda body: agent_reply(body, multiplying_agent(body))) as server:
        result = cli("eval", str(run.path), "--split", "train", "--set", f"llm.base_url={server.base_url}")
    assert (result["epoch"], result["accuracy"], result["n"]) == (1, 1.0, 2)
    assert json.loads((run.evals_dir / "train-epoch-1.json").read_text())["accuracy"] == 1.0


def test_a_format_1_run_refuses_an_override_its_results_depend_on(tmp_path):
    run = format_1_run(tmp_path)
    result = runner.invoke(app, ["eval", str(run.path), "--set", "agent.max_turns=9"])
    assert "changes what the run's results depend on" in str(result.exception)


def test_a_run_of_a_newer_format_is_refused_with_what_to_do(tmp_path):
    run = story_run(tmp_path)
    data = json.loads((run.path / "run.json").read_text())
    (run.path / "run.json").write_text(json.dumps({**data, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(UserError, match=rf"format {FORMAT_VERSION + 1}, newer than this agenttrain reads.*upgrade"):
        run.info()
    with pytest.raises(UserError, match="newer than this agenttrain reads"):
        run.snapshot(0)


def test_new_runs_record_the_current_format_and_keep_fields_they_do_not_know(tmp_path):
    run = story_run(tmp_path)
    assert json.loads((run.path / "run.json").read_text())["format_version"] == FORMAT_VERSION
    run.update_info(viewer_note="added by a newer version")
    assert run.info().model_extra == {"viewer_note": "added by a newer version"}


def test_a_damaged_record_is_named_with_the_field_at_fault(tmp_path):
    run = story_run(tmp_path)
    metrics = run.path / "epoch-1" / "metrics.json"
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "train_accuracy": "high"}))
    with pytest.raises(UserError, match=r"epoch-1/metrics.json: not a valid epoch metrics file \(train_accuracy"):
        run.snapshot(1)


def test_every_field_of_every_record_is_documented():
    undocumented = [f"{model.__name__}.{name}" for model in (*RECORDS, *NESTED)
                    for name, field in model.model_fields.items() if not field.description]
    assert undocumented == []


def test_the_run_directory_page_is_what_the_models_render():
    page = (Path(__file__).parents[1] / "docs" / "run-directory.md").read_text(encoding="utf-8")
    assert page == render(), "regenerate it: python -m agenttrain.rundir.records_doc > docs/run-directory.md"
