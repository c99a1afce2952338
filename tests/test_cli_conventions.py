"""Command-line conventions a newcomer expects: -h, --version, value hints, the run given one way everywhere
(defaulting to the newest), shortcuts, --limit, extending a finished run, JSON that says what went wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agenttrain.cli import app
from agenttrain.rundir.directory import RunDir
from tests.support.fake_openai import FakeOpenAI
from tests.support.files import write_problems
from tests.support.scripted import MULTIPLY, TERMINATE, add, is_optimizer, list_b, multiplying_agent

PRODUCTS = [("What is 6 times 7?", "42"), ("What is 5 times 8?", "40"), ("What is 3 times 9?", "27"),
            ("What is 4 times 4?", "16"), ("What is 2 times 9?", "18")]
runner = CliRunner()


def invoke(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads(result.stdout)


def respond(body):
    if is_optimizer(body):
        return TERMINATE if "multiply" in list_b(body) else add("multiply", MULTIPLY)
    return multiplying_agent(body)


@pytest.fixture
def world(write_config, tmp_path, monkeypatch):
    """A fake server and a config for it; the runs folder is ./runs, as for a user who set nothing."""
    with FakeOpenAI(respond) as server:
        data = write_problems(tmp_path / "problems.jsonl", PRODUCTS)
        config = write_config(server.base_url, data, optimizer={"epochs": 1}, task={"train_size": 3, "test_size": 2})
        yield server, config


def test_version_and_short_help():
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.stdout.startswith("agenttrain ")
    short = runner.invoke(app, ["train", "-h"])
    assert short.exit_code == 0 and "Usage:" in short.stdout


def test_help_shows_value_hints_not_python_types():
    for command in ("train", "eval", "diff", "show", "score", "export", "functions", "serve", "report", "validate",
                    "sweep", "view"):
        text = runner.invoke(app, [command, "--help"]).stdout
        options = text.split("Options:", 1)[1]
        for python_type in ("<bool>", "<list[str]>", "{run}", "<int>", "<str>", "<path>"):
            assert python_type not in options, (command, python_type)
        assert "{run}" not in text
    train = runner.invoke(app, ["train", "--help"]).stdout
    assert "--resume RUN" in train and "--limit INTEGER" in train and "--model TEXT" in train
    assert "--set KEY=VALUE" in train and "AGENTTRAIN_BASE_URL" in train and "AGENTTRAIN_OUTPUT_DIR" in train


def test_eval_help_shows_a_set_example_that_matters_to_eval():
    text = " ".join(runner.invoke(app, ["eval", "--help"]).stdout.split())
    assert "--set llm.base_url=" in text and "optimizer.epochs" not in text


@pytest.mark.slow
def test_commands_take_the_run_positionally_or_as_run_and_default_to_the_newest(world, tmp_path):
    _, config = world
    first = Path(invoke("train", str(config), "--set", "name=first")["run"])
    newest = Path(invoke("train", str(config), "--set", "name=second")["run"])
    assert invoke("show")["run"] == str(newest)
    assert invoke("show", str(first))["run"] == invoke("show", "--run", str(first))["run"] == str(first)
    assert invoke("eval")["run"] == str(newest)
    by_position = invoke("diff", "epoch-0", "epoch-1", str(first))
    assert by_position == invoke("diff", "epoch-0", "epoch-1", "--run", str(first))
    assert invoke("diff", "epoch-0", "epoch-1")["fixed"] == by_position["fixed"]
    assert invoke("report")["report"].startswith(str(newest))
    both = runner.invoke(app, ["show", str(first), "--run", str(newest)])
    assert both.exit_code != 0 and "give one" in str(both.exception)


@pytest.mark.slow
def test_eval_json_lists_each_task_and_limit_runs_the_first_n(world):
    _, config = world
    run = invoke("train", str(config))["run"]
    result = invoke("eval", run, "--split", "train")
    assert [set(item) for item in result["items"]] == [{"id", "correct", "extracted"}] * 3
    assert result["correct"] == sum(item["correct"] for item in result["items"])
    limited = invoke("eval", run, "--split", "train", "--limit", "1")
    assert limited["n"] == 1 and limited["items"][0]["id"] == result["items"][0]["id"]
    assert (Path(run) / "evals" / "first1-train-epoch-1.json").is_file()  # never mistaken for the full split
    assert json.loads((Path(run) / "evals" / "train-epoch-1.json").read_text())["n"] == 3


@pytest.mark.slow
def test_train_shortcuts_for_models_and_limit(world):
    server, config = world
    run = RunDir(Path(invoke("train", str(config), "-m", "small-agent", "--optimizer-model", "big-opt",
                             "--limit", "2")["run"]))
    experiment = run.experiment()
    assert (experiment.agent.model, experiment.optimizer.model, experiment.task.limit) == ("small-agent", "big-opt", 2)
    assert len(run.snapshot(0).rollouts()) == 2
    assert {b["model"] for b in server.requests} == {"small-agent", "big-opt"}


@pytest.mark.slow
def test_a_finished_run_can_be_extended_with_more_epochs_but_nothing_else_changes(world):
    _, config = world
    run = Path(invoke("train", str(config), "--set", "optimizer.epochs=0")["run"])
    assert RunDir(run).epochs() == [0]
    extended = invoke("train", "--resume", str(run), "--set", "optimizer.epochs=1")
    assert extended["status"] == "finished" and RunDir(run).epochs() == [0, 1]
    again = invoke("train", "--resume", str(run), "--set", "optimizer.epochs=2", "--set", "optimizer.early_stop=3")
    assert again["status"] == "finished" and RunDir(run).epochs() == [0, 1, 2]
    refused = runner.invoke(app, ["train", "--resume", str(run), "--set", "agent.temperature=0.5"])
    assert refused.exit_code != 0 and "optimizer.early_stop and optimizer.budget may change" in str(refused.exception)
    fewer = runner.invoke(app, ["train", "--resume", str(run), "--set", "optimizer.epochs=1"])
    assert "already saved epoch 2" in str(fewer.exception)


def test_validate_json_reports_a_bad_config_as_data(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntask: {name: math, path: bad.yaml}\noptimizer: {epochz: 1}\n")
    result = runner.invoke(app, ["validate", str(bad), "--json", "--offline"])
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {"config": str(bad), "ok": False,
                                         "errors": ["optimizer.epochz: unknown key; did you mean `epochs`?"]}


def test_score_takes_a_scorer(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text(json.dumps({"prediction": "\\boxed{2}", "answer": "2"}) + "\n")
    assert invoke("score", str(path), "--scorer", "math")["accuracy"] == 1.0


@pytest.mark.slow
def test_human_output_words(world, tmp_path):
    _, config = world
    text = runner.invoke(app, ["train", str(config)]).stdout
    assert "best epoch 1" in text and "None" not in text
    run = Path(text.split("run ", 1)[1].split(":", 1)[0])
    shown = runner.invoke(app, ["show", str(run)]).stdout
    assert "rolled_back" not in shown and "baseline" in shown
    exported = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "f.py")]).stdout
    assert "wrote 1 function of epoch 1" in exported
    assert "(ran 1 epoch)" in text  # not "1 epochs"
    listed = runner.invoke(app, ["runs", str(run.parent)], terminal_width=120).stdout
    assert " │      1 │ " in listed  # the epochs column counts as "ran 1 epoch" does, not the baseline too


def test_a_dry_run_table_shows_every_figure_whole_and_folds_rather_than_cuts_when_narrow(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    config = str(Path(__file__).parents[1] / "configs" / "own-task-api.yaml")
    estimate = invoke("train", config, "--dry-run")
    text = runner.invoke(app, ["train", config, "--dry-run"]).stdout  # a pipe: 80 columns
    assert "estimate: 16 training tasks, 5 epochs" in text
    for row in estimate["typical"] + estimate["worst_case"]:
        for figure in (f"{row['requests']:,}", f"{row['prompt_tokens']:,}", f"{row['cost_usd']:.2f}"):
            assert f" {figure} " in text, figure
    monkeypatch.setenv("COLUMNS", "50")
    narrow = runner.invoke(app, ["train", config, "--dry-run"]).stdout
    assert "…" not in narrow and max(len(line) for line in narrow.splitlines()) <= 50
