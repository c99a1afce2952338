"""Training from a notebook: `agenttrain.train(task=[...], scorer=function)` takes examples in memory and a plain
Python scorer, returns the run with its functions and metrics, and leaves the same run folder as the command line.
Every bad argument is one clear error before any run folder exists."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import agenttrain
from agenttrain.cli import app
from agenttrain.config import ConfigError
from agenttrain.errors import UserError
from agenttrain.registry import scorers
from agenttrain.scorers.in_process import judge_in_thread, register_scorer
from agenttrain.tasks.base import DataError
from tests.support.fake_openai import FakeOpenAI
from tests.support.scripted import MULTIPLY, TERMINATE, add, is_optimizer, list_b, multiplying_agent

EXAMPLES = [{"question": f"What is {a} times {b}?", "answer": str(a * b)} for a, b in
            [(6, 7), (5, 8), (3, 9), (4, 4), (12, 11)]]
runner = CliRunner()


@pytest.fixture(autouse=True)
def _own_scorers(monkeypatch):
    """The scorers these tests register in this process are gone after each: other tests list the registered ones."""
    scorers.names()  # loaded first, so that what loading adds is kept
    monkeypatch.setattr(scorers, "_entries", dict(scorers._entries))


def world(body):
    if is_optimizer(body):
        return TERMINATE if "multiply" in list_b(body) else add("multiply", MULTIPLY)
    return multiplying_agent(body)


def same_number(answer: str, gold: str) -> bool:
    return float(answer) == float(gold)


def settings(tmp_path: Path) -> dict:
    return {"output_dir": str(tmp_path / "runs"), "sandbox": {"warm_workers": 1}}


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    with FakeOpenAI(world) as fake:
        yield fake


def llm(server: FakeOpenAI, tmp_path: Path) -> dict:
    return {"base_url": server.base_url, "cache_dir": str(tmp_path / "cache")}


@pytest.mark.slow
def test_a_notebook_trains_on_examples_with_a_python_scorer_and_gets_the_run_back(server, tmp_path):
    result = agenttrain.train(task=EXAMPLES, agent="agent-model", optimizer={"model": "optimizer-model", "epochs": 1},
                              scorer=same_number, llm=llm(server, tmp_path), settings=settings(tmp_path),
                              progress=False)
    assert result.status == "finished" and result.best_epoch == 1
    assert result.functions.names == ["multiply"]
    assert [m.train_accuracy for m in result.metrics] == [0.0, 1.0]
    config = yaml.safe_load((result.path / "config.yaml").read_text())
    assert config["task"]["name"] == "inline" and config["task"]["scorer"] == "python:same_number"
    assert len(config["task"]["train"]) == 5  # the run folder holds its data
    assert agenttrain.evaluate(result.path, split="test")["accuracy"] == 1.0  # 20% held out: one example
    shown = runner.invoke(app, ["show", str(result.path)])
    assert shown.exit_code == 0 and "accepted" in shown.stdout  # the CLI reads it like any run


@pytest.mark.slow
def test_a_scorer_name_and_question_answer_pairs_work_too_and_the_config_form_still_does(server, tmp_path):
    pairs = [(e["question"], e["answer"]) for e in EXAMPLES]
    result = agenttrain.train(task=pairs[:3], test=pairs[3:], scorer="numeric", llm=llm(server, tmp_path),
                              optimizer={"epochs": 0}, settings=settings(tmp_path), progress=False)
    assert result.status == "finished" and len(result.run.snapshot(0).rollouts()) == 3
    again = agenttrain.train(result.path / "config.yaml", ["optimizer.epochs=0"])  # the command line's form
    assert again.status == "finished" and again.path != result.path


def test_the_scorer_gets_the_answer_not_the_whole_reply_and_a_third_argument_gets_the_example():
    seen = []

    def check(answer, gold, example):
        seen.append((answer, gold, example))
        return answer == gold

    name = register_scorer(check)
    verdict = asyncio.run(judge_in_thread(name, "Thinking...\nFINAL ANSWER: 42", "42", {"unit": "cm"}, 5))
    assert verdict.correct and verdict.extracted == "42" and seen == [("42", "42", {"unit": "cm"})]


@pytest.mark.parametrize(("function", "note"), [
    (lambda answer, gold: 1 / 0, "the scorer raised ZeroDivisionError: division by zero"),
    (lambda answer, gold: 0.7, "the scorer returned 0.7, not True or False: counted as wrong"),
])
def test_a_scorer_that_fails_or_returns_no_verdict_makes_the_item_wrong_with_a_note(function, note):
    name = register_scorer(function, "odd")
    verdict = asyncio.run(judge_in_thread(name, "\\boxed{3}", "3", {}, 5))
    assert not verdict.correct and verdict.note == note


def test_a_scorer_that_hangs_is_wrong_after_the_time_limit_and_does_not_hold_the_run():
    name = register_scorer(lambda answer, gold: time.sleep(30), "sleepy")
    started = time.monotonic()
    verdict = asyncio.run(judge_in_thread(name, "\\boxed{3}", "3", {}, 0.2))
    assert not verdict.correct and verdict.note == "scorer timed out after 0.2s"
    assert time.monotonic() - started < 5


def test_a_cell_run_again_redefines_its_scorer():
    register_scorer(lambda answer, gold: False, "mine")
    name = register_scorer(lambda answer, gold: True, "mine")
    assert asyncio.run(judge_in_thread(name, "x", "y", {}, 5)).correct


@pytest.mark.parametrize(("arguments", "error", "message"), [
    ({"task": "What is 6 times 7?"}, UserError, "task must be a list of examples"),
    ({"task": [["What is 6 times 7?"]]}, UserError, r"task\[0\] is a list; give a mapping with 'question' and"),
    ({"task": [{"question": "6 times 7?"}] * 2}, DataError, "task.train:1: missing field 'answer'"),
    ({"task": EXAMPLES, "settings": {"optimiser": {"epochs": 1}}}, ConfigError,
     "optimiser: unknown key; did you mean `optimizer`?"),
    ({"task": EXAMPLES, "settings": {"executor": {"kind": "ray"}}}, UserError, "Ray workers cannot call"),
    ({"config": "configs/quickstart.yaml", "task": EXAMPLES}, UserError, "not both"),
    ({}, UserError, "give a config file, or the examples as task="),
])
def test_bad_arguments_are_one_clear_error_and_make_no_run_folder(tmp_path, monkeypatch, arguments, error, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    with pytest.raises(error, match=message):
        agenttrain.train(scorer=same_number, offline=True, progress=False, **arguments)
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_the_command_line_names_the_fix_for_a_run_scored_by_a_python_function(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"name": "nb", "task": {"name": "inline", "train": EXAMPLES,
                                                             "scorer": "python:same_number"}}))
    result = subprocess.run([sys.executable, "-c", "from agenttrain.cli import main; main()", "validate",
                             str(config), "--offline"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert "'python:same_number' is a Python function that agenttrain.train() was given in another process" \
        in result.stderr and "agenttrain.register_scorer(function)" in result.stderr
