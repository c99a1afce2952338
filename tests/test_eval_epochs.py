"""The test learning curve: `eval --epoch all` evaluates every snapshot once per distinct function set, and the
report draws and tabulates test accuracy per epoch beside training accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agenttrain.cli import app
from agenttrain.names import STRICT_MEANING
from agenttrain.rundir.directory import RunDir
from tests.support.fake_openai import FakeOpenAI
from tests.support.files import write_problems
from tests.support.scripted import MULTIPLY, TERMINATE, add, is_optimizer, list_b, multiplying_agent
from tests.test_report import table_rows

pytestmark = pytest.mark.slow

PRODUCTS = [("What is 6 times 7?", "42"), ("What is 5 times 8?", "40"), ("What is 3 times 9?", "27"),
            ("What is 4 times 4?", "16")]
runner = CliRunner()


def invoke(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads(result.stdout)


def agent_requests(server: FakeOpenAI) -> int:
    return sum(not is_optimizer(body) for body in server.requests)


def test_eval_all_epochs_runs_each_function_set_once_and_the_report_draws_the_test_curve(write_config, tmp_path):
    def optimizer(body):
        return TERMINATE if "multiply" in list_b(body) else add("multiply", MULTIPLY)

    with FakeOpenAI(lambda body: optimizer(body) if is_optimizer(body) else multiplying_agent(body)) as server:
        data = write_problems(tmp_path / "problems.jsonl", PRODUCTS)
        config = write_config(server.base_url, data, task={"train_size": 2, "test_size": 2},
                              llm={"cache": False})
        run = Path(invoke("train", str(config))["run"])
        assert [RunDir(run).snapshot(e).metrics.status for e in RunDir(run).epochs()] == \
            ["baseline", "accepted", "unchanged"]

        before = agent_requests(server)
        curve = invoke("eval", str(run), "--epoch", "all")["evaluations"]
        first_pass = agent_requests(server) - before
        assert [(e["epoch"], e["accuracy"]) for e in curve] == [(0, 0.0), (1, 1.0), (2, 1.0)]
        # epoch 2 kept epoch 1's functions: reused, not run, and not counted as a cost again
        assert curve[2]["reused_from"] == 1 and curve[2]["usage"] == {}
        assert curve[1]["reused_from"] is None and curve[1]["usage"]["agent"]["requests"] > 0
        assert first_pass == 2 * 2 + 2 * 1  # epoch 0: two one-turn answers; epoch 1: a call, then the answer

        # the single-epoch eval gives the same numbers as the curve
        single = invoke("eval", str(run), "--epoch", "1")
        assert (single["accuracy"], single["ci95"]) == (curve[1]["accuracy"], curve[1]["ci95"])

        again = invoke("eval", str(run), "--epoch", "all")["evaluations"]
        assert agent_requests(server) - before == first_pass + 2 * 2  # only the --epoch 1 call above ran
        assert [e["reused_from"] for e in again] == [0, 1, 1]

    report = invoke("report", str(run))
    markdown = Path(report["report"]).read_text()
    curve_rows = table_rows(markdown, "| epoch | outcome | train | test | functions | actions applied | tokens "
                                      "| cost $ |")
    assert [(row[0], row[2], row[3]) for row in curve_rows] == [
        ("0", "0.0%", "0.0%"), ("1 (best)", "100.0%", "100.0%"), ("2", "100.0%", "100.0%")]
    assert (Path(report["report"]).parent / "learning_curve.png").stat().st_size > 0


def test_the_human_output_names_the_interval_and_the_reuse(write_config, tmp_path):
    with FakeOpenAI(lambda body: TERMINATE if is_optimizer(body) else multiplying_agent(body)) as server:
        data = write_problems(tmp_path / "problems.jsonl", PRODUCTS)
        run = invoke("train", str(write_config(server.base_url, data, optimizer={"epochs": 1})))["run"]
        result = runner.invoke(app, ["eval", run, "--epoch", "all"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "epoch 0 on test: accuracy 0.000 (0/1), 95% CI 0.000-0.793 (Wilson score), strict 0.000"
    assert lines[-1] == STRICT_MEANING  # what "strict" means, where it is printed
    assert lines[1].endswith("(same functions as epoch 0: not run again)")
