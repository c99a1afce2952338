"""`optimizer.method: search`: a pool judged task by task on a validation split the optimizer never reads, a
minibatch gate, merges of sets that solve different tasks, paired evidence and attribution per candidate, a
budget that stops it cleanly, and the run format every other command reads."""

from __future__ import annotations

import html
import json
import random
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from agenttrain import api
from agenttrain.config import ConfigError, load_experiment
from agenttrain.functions import FunctionSet, build_function
from agenttrain.optimizers.pool import Member, Pool
from agenttrain.rundir.directory import RunDir, find_runs
from tests.support.fake_openai import FakeOpenAI, tool_call
from tests.support.files import write_problems
from tests.support.kills import KILL_AT_EVERY_WRITE, comparable, leftovers
from tests.support.records import scored
from tests.support.scripted import (
    TERMINATE,
    add,
    boxed,
    is_optimizer,
    list_b,
    numbers,
    offered_tools,
    question,
    tool_results,
)
from tests.support.viewing import viewer

ADD = "def add(a, b):\n    return a + b\n"
MULTIPLY = "def multiply(a, b):\n    return a * b\n"
PROBLEMS = [(f"What is {a} times {a + 1}?", str(a * (a + 1))) for a in range(2, 8)] + \
           [(f"What is {a} plus {a + 3}?", str(2 * a + 3)) for a in range(2, 8)]


def function(name: str, code: str) -> Any:
    return build_function(name, f"The {name} function.", {"a": {"type": "integer"}, "b": {"type": "integer"}}, "",
                          code)


def member(epoch: int, solved: set[str], tasks: int = 4, functions: tuple | None = None,
           calls: dict | None = None) -> Member:
    """A pool member; by default a set of its own (one function named after its epoch)."""
    calls = calls or {}
    val = tuple(scored(f"v{i}", f"v{i}" in solved, calls.get(f"v{i}", ())) for i in range(tasks))
    own = (function(f"f{epoch}", f"def f{epoch}(a, b):\n    return a\n"),)
    return Member(epoch, FunctionSet(own if functions is None else functions), val)


# -- the pool, as pure functions ------------------------------------------------------------------------------


def test_a_set_stays_on_the_front_while_no_set_is_as_good_everywhere_and_better_somewhere():
    pool = Pool()
    for m in (member(0, set()), member(1, {"v0", "v1"}), member(2, {"v2"}), member(3, {"v0"})):
        pool.add(m)
    front = [m.epoch for m in pool.front(4)]
    assert front == [1, 2]  # 0 and 3 are dominated by 1; 2 alone solves v2, so it stays despite 25%
    assert [m.epoch for m in pool.front(2)] == [1]  # the front as it stood before epoch 2
    assert pool.best(4).epoch == 1


def test_parents_are_drawn_from_the_front_favouring_sets_alone_on_some_tasks():
    pool = Pool()
    first = member(0, {"v0", "v1", "v2"})
    for m in (first, member(1, {"v0", "v1", "v3"}), member(2, {"v0", "v1", "v2", "v3"}, functions=first.functions)):
        pool.add(m)
    rng = random.Random(0)
    drawn = [pool.sample_parent(rng, 3).epoch for _ in range(2000)]
    assert set(drawn) == {0, 1}  # 2 is the set of 0 judged again: the same idea, not a front member of its own
    assert drawn.count(1) > drawn.count(0) > 0  # each alone on one task; 0 shares v2 with nobody, 1 shares v3


def test_a_merge_unites_two_front_members_keeping_the_version_that_did_better_where_it_was_called():
    good_add, bad_add = function("add", ADD), function("add", "def add(a, b):\n    return a - b\n")
    a = member(1, {"v0"}, functions=(bad_add, function("multiply", MULTIPLY)),
               calls={"v0": [("multiply", True)], "v1": [("add", True)]})
    b = member(2, {"v1"}, functions=(good_add,), calls={"v1": [("add", True)]})
    pool = Pool()
    for m in (member(0, set()), a, b):
        pool.add(m)
    first, second, union = pool.merge_pair(3, set())
    assert (first, second) == (a, b)  # the more accurate first: equal here, the earlier one
    assert sorted(union.names) == ["add", "multiply"] and union.get("add") == good_add  # b's add: 1 of 1 right
    tried = {frozenset((a.functions.content_hash(), b.functions.content_hash()))}
    assert pool.merge_pair(3, tried) is None


def test_a_merge_leaves_out_a_function_that_did_worse_where_it_was_called_than_the_agent_alone():
    harmful, add_ = function("any_value", "def any_value(a, b):\n    return 0\n"), function("add", ADD)
    multiply = function("multiply", MULTIPLY)
    pool = Pool()
    pool.add(member(0, {"v0"}, tasks=6, functions=()))  # the agent alone: 1 of 6
    pool.add(member(1, {"v1", "v4"}, tasks=6, functions=(multiply,),
                    calls={"v1": [("multiply", True)], "v4": [("multiply", True)]}))
    pool.add(member(2, {"v2"}, tasks=6, functions=(add_, harmful),
                    calls={"v2": [("add", True)], **{f"v{i}": [("any_value", True)] for i in (0, 3, 5)}}))
    assert pool.record(harmful, 3) == (0, 3) and pool.record(multiply, 3) == (2, 2)
    first, second, union = pool.merge_pair(3, set())
    assert (first.epoch, second.epoch) == (1, 2)  # they solve the most tasks the other does not
    assert union.names == ["multiply", "add"]  # any_value: right on none of the 3 tasks where it was called


# -- end to end against the fake server ---------------------------------------------------------------------


def agent(body: dict[str, Any]) -> Any:
    """Right on "times" only through `multiply`, on "plus" only through `add`."""
    if results := tool_results(body):
        return boxed(numbers(results[-1])[-1])
    text = question(body)
    a, b = numbers(text)[:2]
    tool = "multiply" if "times" in text else "add"
    return tool_call(tool, {"a": a, "b": b}) if tool in offered_tools(body) else boxed(0)


def optimizer(body: dict[str, Any]) -> Any:
    """Writes the tool for the kind of task that failed most in its prompt."""
    failed = re.findall(r"### Task \S+ \(FAILED\)\n.*?What is \d+ (times|plus)", body["messages"][1]["content"], re.S)
    for kind in sorted(set(failed), key=lambda k: (-failed.count(k), k)):
        name, code = ("multiply", MULTIPLY) if kind == "times" else ("add", ADD)
        if f"name: {name}" not in list_b(body):
            return add(name, code)
    return TERMINATE


def world(body: dict[str, Any]) -> Any:
    return optimizer(body) if is_optimizer(body) else agent(body)


def search_config(tmp_path: Path, base_url: str, **optimizer_keys: Any) -> Path:
    data = write_problems(tmp_path / "problems.jsonl", PROBLEMS)
    config = {"name": "search", "task": {"name": "math", "path": str(data), "train_size": 10, "test_size": 2},
              "agent": {"model": "agent-model", "max_turns": 4},
              "optimizer": {"model": "optimizer-model", "method": "search", "epochs": 4, "candidates": 2,
                            "minibatch": 3, "max_actions": 1, **optimizer_keys},
              "llm": {"base_url": base_url, "cache_dir": str(tmp_path / "cache"), "max_retries": 0,
                      "api_key_env": "NO_KEY_NEEDED"},
              "sandbox": {"warm_workers": 1}, "output_dir": str(tmp_path / "runs")}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_search_takes_a_validation_split_out_of_the_training_examples_and_records_the_sizes(tmp_path):
    experiment = load_experiment(search_config(tmp_path, "http://127.0.0.1:9/v1"))
    assert (experiment.task.train_size, experiment.task.val_size) == (6, 4)  # 40% of 10, set aside
    assert experiment.optimizer.early_stop == 1000  # the method's own default: a search runs its candidates out
    with pytest.raises(ConfigError, match=r"task\.train_size=3 is too small to set aside a validation split"):
        load_experiment(search_config(tmp_path, "http://127.0.0.1:9/v1"), ["task.train_size=3"])


@pytest.mark.slow
def test_search_unites_functions_found_in_different_sets_and_selects_on_the_validation_split(tmp_path):
    with FakeOpenAI(world) as server:
        run = api.train(search_config(tmp_path, server.base_url), offline=True).run
        evaluation = api.eval_run(run.path, offline=True)
        optimizer_prompts = [json.dumps(b["messages"]) for b in server.requests if is_optimizer(b)]
    epochs = {e: run.snapshot(e) for e in run.epochs()}
    assert epochs[1].functions.names == ["add"] and epochs[2].functions.names == ["multiply"]
    library = epochs[3].metrics.candidate  # the pool's best-recorded version of each function, against the best set
    assert (library.operation, library.parents, library.passed_gate, library.on_front) == ("library", [1], True, True)
    assert [a.reason for a in epochs[3].metrics.actions] == ["the library of the pool's best-recorded functions"]
    assert sorted(epochs[3].functions.names) == ["add", "multiply"] and epochs[3].metrics.val_accuracy == 1.0
    assert run.best_epoch() == 3 and json.loads((run.path / "best.json").read_text())["selected_by"] == "val"
    assert evaluation["epoch"] == 3 and evaluation["accuracy"] == 1.0
    # the optimizer never read a validation task's conversation
    val_questions = {r.question for r in epochs[0].val_rollouts() or []}
    assert len(val_questions) == 4 and not any(q in p for q in val_questions for p in optimizer_prompts)
    # each candidate says how it came about, what it cost, and what its function did against its parent
    first = epochs[1].metrics
    assert first.candidate.parents == [0] and first.candidate.correct > first.candidate.parent_correct
    assert first.usage["optimizer"]["requests"] >= 1 and first.rollouts >= 2 * 3 + 4
    assert first.comparison.split == "val" and first.comparison.against == "epoch 0"
    [effect] = first.attribution
    assert effect.name == "add" and effect.right == len(effect.tasks) == len(effect.fixed) > 0
    # diff compares two candidates where they were judged: on the validation split
    compared = api.diff("epoch-0", "epoch-3", run.path, tmp_path)
    assert compared["validation"]["broken"] == 0 and compared["validation"]["fixed"] == 4
    effects = compared["attribution"]["functions"]  # each validation task was fixed by the function it called
    assert compared["attribution"]["split"] == "val" and {e["name"] for e in effects} == {"add", "multiply"}
    assert sum(len(e["fixed"]) for e in effects) == 4 and all(e["right"] == len(e["tasks"]) for e in effects)
    assert all(line.endswith("fixed, 0 broken") for line in compared["attribution"]["described"])
    # the viewer draws the lineage from the baseline and the front the search would draw parents from next
    lineage = viewed(run, "candidates")
    assert "on the front" in lineage and "epoch 3 library of epoch 1" in lineage and "★ best" in lineage
    assert all(f"epoch {e}" in lineage for e in run.epochs())
    assert "candidates" in viewed(run, "")  # the run page links to it


def viewed(run: RunDir, page: str) -> str:
    """The text of one of the viewer's pages about `run`, tags stripped."""
    with viewer(run.path) as url, urllib.request.urlopen(f"{url}/runs/{run.path.name}/{page}", timeout=10) as got:
        return html.unescape(re.sub(r"<[^>]+>", "", got.read().decode()))


@pytest.mark.slow
def test_a_candidate_that_does_not_beat_its_parent_on_the_minibatch_never_runs_on_the_validation_split(tmp_path):
    def useless(body: dict[str, Any]) -> Any:  # a function the agent never calls
        return add("noop", "def noop(a, b):\n    return None\n") if "noop" not in list_b(body) else TERMINATE

    with FakeOpenAI(lambda body: useless(body) if is_optimizer(body) else agent(body)) as server:
        run = api.train(search_config(tmp_path, server.base_url, epochs=2), offline=True).run
    for epoch in (1, 2):
        metrics = run.snapshot(epoch).metrics
        assert metrics.status == "rolled_back" and metrics.val_n is None and not metrics.candidate.passed_gate
        assert metrics.candidate.note == "it did not beat its parent on the minibatch"
        assert metrics.rollouts == 2 * 3  # parent and candidate on the minibatch, nothing more
    assert run.best_epoch() == 0


@pytest.mark.slow
def test_the_optimizer_budget_sizes_the_last_round_and_stops_the_search_and_a_larger_one_continues_it(tmp_path):
    with FakeOpenAI(world) as server:
        config = search_config(tmp_path, server.base_url, budget={"rollouts": 12})
        estimate = api.dry_run(config)
        outcome = api.train(config, offline=True)
        assert outcome.status == "finished" and "optimizer.budget.rollouts spent" in outcome.run.info().reason
        assert outcome.run.epochs() == [0, 1]  # the baseline's 10 left room for one candidate, not a round of 2
        resumed = api.resume(outcome.run.path, ["optimizer.budget.rollouts=1000"], offline=True)
    assert resumed.status == "finished" and resumed.run.epochs() == [0, 1, 2, 3, 4]
    assert estimate["budget"]["proposals"] < 3 and "raise optimizer.budget.rollouts" in estimate["budget"]["warning"]


@pytest.mark.slow
def test_a_cached_rerun_of_a_search_sends_no_request(tmp_path):
    with FakeOpenAI(world) as server:
        config = search_config(tmp_path, server.base_url)
        first = api.train(config, offline=True).run
        sent = len(server.requests)
        second = api.train(config, offline=True).run
        assert len(server.requests) == sent
    assert [second.snapshot(e).functions for e in second.epochs()] == [first.snapshot(e).functions
                                                                         for e in first.epochs()]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_kill_at_every_write_of_a_search_then_resume_gives_the_uninterrupted_run(tmp_path):
    """Candidates of a round run concurrently; a resume mid-round replays the round as it was drawn. Every third
    write of the run's 77 (tests/test_faults.py kills the paper's method at every one)."""
    with FakeOpenAI(world) as server:
        config = search_config(tmp_path, server.base_url, epochs=2, minibatch=2)
        config.write_text(config.read_text().replace("train_size: 10", "train_size: 5").replace(
            "warm_workers: 1", "warm_workers: 0"))
        expected = comparable(api.train(config, [f"output_dir={tmp_path / 'reference'}"], offline=True).run)
        assert expected["status"] == "finished" and len(expected["epochs"]) == 3
        driver = subprocess.run([sys.executable, "-c", KILL_AT_EVERY_WRITE, str(config), str(tmp_path / "killed"),
                                 "3"], capture_output=True, text=True, timeout=850)
    assert driver.returncode == 0, driver.stderr
    completed_at = json.loads(driver.stdout.splitlines()[-1])["completed_at"]
    assert completed_at > 60
    for k in range(1, completed_at, 3):
        if runs := find_runs(tmp_path / "killed" / f"killed-{k}"):
            run = RunDir(runs[0])
            assert comparable(run) == expected, f"killed at write {k}"
            assert leftovers(run) == [], f"killed at write {k}"
