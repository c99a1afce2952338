"""The commands as a user runs them: train, eval, diff, show, validate, --dry-run, score; JSON on stdout only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agenttrain.cli import app
from agenttrain.rundir.directory import RunDir
from tests.support.fake_openai import FakeOpenAI, Fault, Reply
from tests.support.files import REPO, write_problems
from tests.support.scripted import (
    MULTIPLY,
    MULTIPLY_WRONG,
    TERMINATE,
    add,
    has_rejected_sets,
    is_optimizer,
    list_a,
    list_b,
    multiplying_agent,
    revise,
)

PRODUCTS = [("What is 6 times 7?", "42"), ("What is 5 times 8?", "40"), ("What is 3 times 9?", "27"),
            ("What is 4 times 4?", "16")]
runner = CliRunner()


def invoke(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads(result.stdout)


def optimizer(body):
    return TERMINATE if "multiply" in list_b(body) else add("multiply", MULTIPLY)


@pytest.fixture
def trained(write_config, tmp_path):
    """A finished two-epoch run (baseline, then `multiply` accepted), and the server it talked to."""
    with FakeOpenAI(lambda body: optimizer(body) if is_optimizer(body) else multiplying_agent(body)) as server:
        data = write_problems(tmp_path / "problems.jsonl", PRODUCTS)
        config = write_config(server.base_url, data, optimizer={"epochs": 1})
        result = invoke("train", str(config))
        yield Path(result["run"]), server, config


@pytest.mark.slow
def test_train_eval_diff_show(trained):
    run, _, _ = trained
    evaluation = invoke("eval", str(run))
    assert evaluation["epoch"] == 1 and evaluation["split"] == "test"
    assert (evaluation["accuracy"], evaluation["correct"], evaluation["n"]) == (1.0, 1, 1)
    # one task, solved: the Wilson interval says how little that proves
    assert evaluation["ci_method"] == "wilson" and evaluation["ci95"][1] == 1.0 and evaluation["ci95"][0] < 0.25
    assert (run / "evals" / "test-epoch-1.json").is_file()

    baseline = invoke("eval", str(run), "--epoch", "0", "--split", "train")
    assert baseline["accuracy"] == 0.0 and baseline["n"] == 2

    diff = invoke("diff", "epoch-0", "epoch-1", "--run", str(run))
    assert [f["name"] for f in diff["added"]] == ["multiply"] and diff["removed"] == [] and diff["revised"] == []
    assert diff["fixed"] == 2 and diff["broken"] == 0 and diff["mcnemar_p"] == 0.5

    by_folder = invoke("diff", str(run / "epoch-0"), str(run / "epoch-1"))
    assert by_folder["flips"] == diff["flips"]

    shown = invoke("show", str(run))
    assert [e["status"] for e in shown["epochs"]] == ["baseline", "accepted"] and shown["best_epoch"] == 1


@pytest.mark.slow
def test_rerunning_a_finished_config_makes_zero_api_calls(write_config, tmp_path):
    """A run with code execution (printing its working directory), an accepted epoch, a roll-back and an
    action rejected then retried: the same config run again is answered entirely from the cache."""
    def optimizer(body):
        if "multiply" not in list_a(body):
            retried = any("Rejected" in str(m["content"]) for m in body["messages"] if m["role"] == "tool")
            return add("multiply", MULTIPLY if retried else "def multiply(a, b):\n    return a *\n")
        return TERMINATE if has_rejected_sets(body) else revise("multiply", MULTIPLY_WRONG)

    def agent(body):
        if len(body["messages"]) == 2:
            return Reply(content="```python\nimport os\nprint(os.getcwd())\n```")
        return multiplying_agent(body)

    with FakeOpenAI(lambda body: optimizer(body) if is_optimizer(body) else agent(body)) as server:
        config = write_config(server.base_url, write_problems(tmp_path / "problems.jsonl", PRODUCTS),
                              optimizer={"epochs": 3, "max_actions": 1})
        first = invoke("train", str(config))
        sent = len(server.requests)
        second = invoke("train", str(config))
        assert len(server.requests) == sent
    statuses = [RunDir(Path(first["run"])).snapshot(e).metrics.status for e in range(4)]
    assert statuses == ["baseline", "accepted", "rolled_back", "unchanged"]
    assert second["best_epoch"] == first["best_epoch"] == 1


@pytest.mark.slow
def test_diff_defaults_to_the_newest_run_and_renders_text(trained, tmp_path):
    result = runner.invoke(app, ["diff", "epoch-0", "epoch-1", "--output-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0
    assert "added multiply" in result.stdout and "2 fixed, 0 broken" in result.stdout


def test_dry_run_estimates_without_sending(write_config, tmp_path):
    data = write_problems(tmp_path / "problems.jsonl", PRODUCTS)
    config = write_config("http://127.0.0.1:9/v1", data, agent={"model": "gpt-4o-mini"})
    estimate = invoke("train", str(config), "--dry-run")
    agent, optimizer_row = estimate["typical"]
    assert agent["role"] == "agent" and agent["requests"] > 0 and agent["cost_usd"] > 0
    assert optimizer_row["cost_usd"] is None  # an unpriced model says so rather than guessing
    worst = estimate["worst_case"][0]
    assert worst["requests"] >= agent["requests"] and worst["prompt_tokens"] > agent["prompt_tokens"]
    assert not list((tmp_path / "runs").glob("*"))


def test_score_command_reports_per_item_verdicts(tmp_path):
    lines = [{"id": "a", "prediction": "so \\boxed{\\frac{1}{2}}", "answer": "0.5"},
             {"id": "b", "prediction": "the answer is \\boxed{3}", "answer": "4"},
             {"id": "c", "prediction": "no marker at all: 7", "answer": "7"}]
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = invoke("score", str(path), "--scorer", "math")
    assert [item["id"] for item in result["items"]] == ["a", "b", "c"]
    assert [item["correct"] for item in result["items"]][:2] == [True, False]
    assert result["items"][0]["extracted"] == "\\frac{1}{2}"
    assert result["n"] == 3 and "accuracy_strict" in result


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    code = "from agenttrain.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, timeout=60)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "missing.yaml"], "config file not found"),
        (["train", "bad.yaml"], "optimizer.epochz: unknown key"),
        (["train"], "give a CONFIG"),
        (["eval", "not-a-run"], "not a run directory"),
        (["score", "preds.jsonl", "--scorer", "chess"], "unknown scorer"),
        (["score", "preds.jsonl", "--scorer", "math"], "preds.jsonl:2"),
        (["score", "empty.jsonl", "--scorer", "math"], "no predictions"),
        (["score", ".", "--scorer", "math"], "is a folder"),
        (["validate", "bad.yaml", "--set", "optimizer.epochs"], "KEY=VALUE"),
    ],
)
def test_user_errors_print_one_clear_line_and_no_traceback(tmp_path, args, message):
    (tmp_path / "bad.yaml").write_text("name: x\ntask: {name: math, path: bad.yaml}\noptimizer: {epochz: 1}\n")
    (tmp_path / "preds.jsonl").write_text('{"prediction": "1", "answer": "1"}\n{"answer": "2"}\n')
    (tmp_path / "empty.jsonl").write_text("")
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_help_shows_an_example_for_every_command():
    commands = ["", "train", "validate", "eval", "diff", "show", "score", "report", "export", "functions", "serve",
                "runs", "cache", "cache stats", "cache clear", "data", "data pull"]
    for command in commands:
        result = runner.invoke(app, [*command.split(), "--help"])
        assert result.exit_code == 0 and "Example: agenttrain" in result.stdout, command


@pytest.mark.slow
def test_transfer_eval_runs_the_learned_functions_on_another_task(trained, tmp_path):
    run, server, _ = trained
    other = write_problems(tmp_path / "other.jsonl", [("What is 9 times 9?", "81"), ("What is 2 times 2?", "4")],
                           kind="Prealgebra")
    config = tmp_path / "other.yaml"
    config.write_text(f"name: other-v1.5\ntask: {{name: math, path: {other}, train_size: 0, test_size: 2}}\n")
    result = invoke("eval", str(run), "--task", str(config))
    assert (result["accuracy"], result["n"]) == (1.0, 2)  # `multiply` learned on one task set solves the other
    assert (run / "evals" / "transfer-other-v1.5-test-epoch-1.json").is_file()  # a dotted name stays whole
    asked = {b["messages"][1]["content"] for b in server.requests if not is_optimizer(b)}
    assert "What is 9 times 9?" in asked


@pytest.mark.slow
def test_cache_stats_and_clear(trained, tmp_path):
    cache_dir = str(tmp_path / "cache")
    stats = invoke("cache", "stats", "--dir", cache_dir)
    assert stats["entries"] > 0
    assert invoke("cache", "clear", "--dir", cache_dir)["deleted"] == stats["entries"]
    assert invoke("cache", "stats", "--dir", cache_dir)["entries"] == 0


def test_the_quickstart_config_validates_and_estimates_with_the_shipped_data_and_no_key(monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    resolved = invoke("validate", "configs/quickstart.yaml")["resolved"]
    assert resolved["llm"]["base_url"] == "local" and resolved["optimizer"]["epochs"] == 2
    estimate = invoke("train", "configs/quickstart.yaml", "--dry-run")
    assert estimate["train_tasks"] == 4 and estimate["epochs"] == 2
    assert all(row["cost_usd"] == 0 for row in estimate["typical"])  # the embedded model is priced at $0


def test_a_split_that_does_not_fit_is_refused_before_any_run_directory_exists(write_config, tmp_path):
    data = write_problems(tmp_path / "problems.jsonl", PRODUCTS)
    config = write_config("http://127.0.0.1:9/v1", data, task={"train_size": 20, "test_size": 80})
    result = runner.invoke(app, ["train", str(config)])
    assert "only 4 match" in str(result.exception)
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_run_that_fails_before_its_first_epoch_says_why(write_config, tmp_path):
    with FakeOpenAI(lambda body: Fault(status=401)) as server:
        config = write_config(server.base_url, write_problems(tmp_path / "problems.jsonl", PRODUCTS))
        finished = runner.invoke(app, ["train", str(config), "--json"])
    assert finished.exit_code == 1  # a failed run fails the command, for scripts
    result = json.loads(finished.stdout)
    assert result["status"] == "failed" and result["best_epoch"] is None
    assert "OPENAI_API_KEY" in result["reason"]
    assert invoke("show", result["run"])["status"] == "failed"


# Runs the command as a subreaper (PR_SET_CHILD_SUBREAPER), so that whatever it started and left behind becomes our
# child once it has exited, wherever in its tree it was; prints its exit code and those processes, then kills them.
LEFT_BEHIND = """
import ctypes, json, os, signal, subprocess, sys
from pathlib import Path

ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)
code = subprocess.run([sys.executable, "-c", "from agenttrain.cli import main; main()", *sys.argv[1:]],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
left = []
for entry in Path("/proc").iterdir():
    try:
        state, parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
        command = (entry / "cmdline").read_bytes().replace(b"\\0", b" ").decode(errors="replace")
    except (OSError, ValueError):
        continue
    if int(parent) == os.getpid() and state != "Z":
        left.append(command)
        os.kill(int(entry.name), signal.SIGKILL)
print(json.dumps({"code": code, "left": left}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("endpoint", ["up", "down"])
def test_nothing_the_train_command_started_runs_after_it_exits(write_config, tmp_path, endpoint):
    """A finished run (sandbox sessions, scorer processes), and one refused before it starts because its endpoint
    is down (the processes started early for it)."""
    with FakeOpenAI(lambda body: optimizer(body) if is_optimizer(body) else multiplying_agent(body)) as server:
        data = write_problems(tmp_path / "problems.jsonl", PRODUCTS)
        base_url = server.base_url if endpoint == "up" else "http://127.0.0.1:9/v1"
        config = write_config(base_url, data, optimizer={"epochs": 1})
        result = subprocess.run([sys.executable, "-c", LEFT_BEHIND, "train", str(config)], capture_output=True,
                                text=True, cwd=tmp_path, timeout=120)  # fmt: skip
    outcome = json.loads(result.stdout)
    assert outcome == {"code": 0 if endpoint == "up" else 2, "left": []}, result.stderr
