"""End-to-end training against the fake server: accept, roll back, early-stop, TERMINATE, retries, tools."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest

from agenttrain import api
from agenttrain.rundir.directory import RunDir
from tests.support.fake_openai import FakeOpenAI, Reply, tool_call, tool_calls
from tests.support.files import ConfigWriter, write_problems
from tests.support.scripted import (
    MULTIPLY,
    MULTIPLY_WRONG,
    TERMINATE,
    add,
    add_many,
    agent_reply,
    boxed,
    function_payload,
    has_rejected_sets,
    is_optimizer,
    list_a,
    list_b,
    multiplying_agent,
    numbers,
    offered_tools,
    question,
    revise,
    tool_outputs,
    tool_results,
)

pytestmark = pytest.mark.slow

PRODUCTS = [("What is 6 times 7?", "42"), ("What is 5 times 8?", "40"), ("What is 3 times 9?", "27")]


@pytest.fixture(params=["assistant", "react"])
def write_config(request: pytest.FixtureRequest, write_config: ConfigWriter) -> ConfigWriter:
    """Every scenario runs once per agent type; `agent_reply` puts the scripted replies in ReAct form for ReAct."""
    return functools.partial(write_config, agent={"type": request.param})


def world(optimizer, agent=multiplying_agent):
    return FakeOpenAI(lambda body: optimizer(body) if is_optimizer(body) else agent_reply(body, agent(body)))


def train(write_config, server: FakeOpenAI, tmp_path: Path, problems=PRODUCTS, **sections: Any) -> RunDir:
    data = write_problems(tmp_path / "problems.jsonl", problems)
    outcome = api.train(write_config(server.base_url, data, **sections))
    return outcome.run


def statuses(run: RunDir) -> list[str]:
    return [run.snapshot(e).metrics.status for e in run.epochs()]


def test_every_call_is_recorded_with_its_arguments_and_the_text_the_agent_saw(write_config, tmp_path):
    talkative = "def multiply(a, b):\n    print('multiplying')\n    return a * b\n"

    def optimizer(body):
        return TERMINATE if "multiply" in list_b(body) else add("multiply", talkative)

    with world(optimizer) as server:
        run = train(write_config, server, tmp_path, optimizer={"epochs": 1})
    records = sorted(run.snapshot(1).rollouts(), key=lambda r: r.question)
    assert [(c.arguments, c.result) for r in records for c in r.function_calls] == [
        ({"a": 5, "b": 8}, "multiplying\n40"), ({"a": 6, "b": 7}, "multiplying\n42")]
    assert [tool_outputs(r.messages) for r in records] == [["multiplying\n40"], ["multiplying\n42"]]


def test_a_helpful_function_is_accepted_and_terminate_changes_nothing(write_config, tmp_path):
    def optimizer(body):
        return TERMINATE if "multiply" in list_b(body) else add("multiply", MULTIPLY)

    with world(optimizer) as server:
        run = train(write_config, server, tmp_path)
    assert statuses(run) == ["baseline", "accepted", "unchanged"]
    accuracies = [run.snapshot(e).metrics.train_accuracy for e in run.epochs()]
    assert accuracies == [0.0, 1.0, 1.0]
    assert run.best_epoch() == 1
    assert run.info().status == "finished"
    assert (run.path / "epoch-1" / "functions" / "multiply.py").read_text() == MULTIPLY
    # TERMINATE changed nothing, so epoch 2 ran no rollouts at all
    assert not [e for e in run.events() if e["event"] == "rollout" and e["epoch"] == 2]
    assert run.snapshot(2).metrics.actions[0].action == "terminate"


def test_a_harmful_revision_is_rolled_back_and_the_next_epoch_runs_the_restored_code(write_config, tmp_path):
    def optimizer(body):
        if "multiply" not in list_a(body):
            return add("multiply", MULTIPLY)
        if not has_rejected_sets(body):
            return revise("multiply", MULTIPLY_WRONG)
        if "noop" in list_b(body):
            return TERMINATE
        return add("noop", "def noop(x):\n    return x\n", {"x": {"type": "string"}})

    with world(optimizer) as server:
        run = train(write_config, server, tmp_path, optimizer={"epochs": 3, "max_actions": 1})
    assert statuses(run) == ["baseline", "accepted", "rolled_back", "rolled_back"]
    assert run.snapshot(2).metrics.train_accuracy == 0.0
    # epoch 3 starts again from epoch 1's multiply: its rollouts get products, not sums
    epoch3 = run.snapshot(3)
    assert epoch3.functions.get("multiply").code == MULTIPLY
    outputs = [o for r in epoch3.rollouts() for o in tool_outputs(r.messages)]
    assert any("42" in o for o in outputs) and not any(o.strip() == "13" for o in outputs)
    assert epoch3.metrics.train_accuracy == 1.0  # a tie with the incumbent is not an improvement
    assert run.best_epoch() == 1


def test_early_stop_fires_after_consecutive_epochs_without_improvement(write_config, tmp_path):
    def optimizer(body):
        if "multiply" not in list_a(body):
            return add("multiply", MULTIPLY)
        return revise("multiply", MULTIPLY_WRONG)

    with world(optimizer) as server:
        run = train(write_config, server, tmp_path, optimizer={"epochs": 10, "early_stop": 2, "max_actions": 1})
    assert run.epochs() == [0, 1, 2, 3]
    assert run.info().status == "early_stopped"
    assert run.snapshot(3).metrics.stale == 2


def test_an_invalid_action_is_rejected_then_retried_with_the_reason(write_config, tmp_path):
    def optimizer(body):
        if "multiply" in list_b(body):
            return TERMINATE
        rejected = [m for m in body["messages"] if m["role"] == "tool" and "Rejected" in str(m["content"])]
        if rejected:
            return add("multiply", MULTIPLY)
        return add("multiply", "def multiply(a, b):\n    return a *\n")

    with world(optimizer) as server:
        run = train(write_config, server, tmp_path, optimizer={"epochs": 1})
        retries = [b for b in server.requests if is_optimizer(b) and len(b["messages"]) > 2]
    action = run.snapshot(1).metrics.actions[0]
    assert action.status == "applied" and action.attempts == 2
    assert "does not compile" in retries[0]["messages"][-1]["content"]
    assert run.snapshot(1).metrics.train_accuracy == 1.0


def test_an_action_rejected_every_time_is_skipped_and_logged(write_config, tmp_path):
    bad = add("multiply", "def times(a, b):\n    return a * b\n")  # name and def disagree

    with world(lambda body: bad) as server:
        run = train(write_config, server, tmp_path, optimizer={"epochs": 1, "max_actions": 1,
                                                               "max_action_retries": 2})
    action = run.snapshot(1).metrics.actions[0]
    assert action.status == "rejected" and action.attempts == 3
    assert "def multiply" in action.error
    assert run.snapshot(1).metrics.status == "unchanged"


def test_two_learned_functions_each_run_their_own_code(write_config, tmp_path):
    schema = {"x": {"type": "string"}}

    def optimizer(body):
        if "first" in list_b(body):
            return TERMINATE
        return add_many(("first", "def first(x):\n    return 'alpha-' + x\n", schema),
                        ("second", "def second(x):\n    return 'beta-' + x\n", schema))

    def agent(body):
        results = tool_results(body)
        if results:
            return boxed(" ".join(sorted(results)))
        if offered_tools(body):
            return tool_calls([("first", {"x": "1"}), ("second", {"x": "2"})])
        return boxed("none")

    with world(optimizer, agent) as server:
        run = train(write_config, server, tmp_path, optimizer={"epochs": 1})
    rollout = run.snapshot(1).rollouts()[0]
    outputs = tool_outputs(rollout.messages)
    assert any("alpha-1" in o for o in outputs) and any("beta-2" in o for o in outputs)
    actions = run.snapshot(1).metrics.actions
    assert [a.action for a in actions] == ["add_function", "add_function", "terminate"]


def test_a_removed_function_is_no_longer_offered_to_the_agent(write_config, tmp_path):
    schema = {"x": {"type": "string"}}
    remove_second = Reply(tool_calls=[{"id": "r", "type": "function",
                                       "function": {"name": "remove_function", "arguments": '{"name": "second"}'}}])

    def optimizer(body):
        if "second" in list_a(body):
            return remove_second
        if "first" in list_a(body):
            return TERMINATE
        return add_many(("first", "def first(x):\n    return x\n", schema),
                        ("second", "def second(x):\n    return x\n", schema))

    with world(optimizer, lambda body: boxed(6)) as server:
        # without roll-back every candidate is kept, so the removal stays in force
        run = train(write_config, server, tmp_path, optimizer={"epochs": 3, "max_actions": 2, "roll_back": False})
        offered = [offered_tools(b) for b in server.requests if not is_optimizer(b)]
    assert statuses(run) == ["baseline", "accepted", "accepted", "unchanged"]
    assert run.snapshot(2).functions.names == ["first"]
    assert offered[-1] == ("first",) and ("first", "second") in offered
    assert offered.index(("first",)) > max(i for i, o in enumerate(offered) if "second" in o)


def test_a_model_that_never_answers_is_scored_wrong_and_training_goes_on(write_config, tmp_path):
    with world(lambda body: TERMINATE, lambda body: Reply(content="Let me think about it some more.")) as server:
        run = train(write_config, server, tmp_path, optimizer={"epochs": 1})
    records = run.snapshot(0).rollouts()
    assert {r.stop_reason for r in records} == {"max_turns"}
    assert all(r.turns == 4 and not r.correct for r in records)
    assert run.info().status == "finished"


def test_code_blocks_run_in_the_sandbox_and_their_output_comes_back(write_config, tmp_path):
    def agent(body):
        last = body["messages"][-1]
        if last["role"] == "user" and "42" in str(last["content"]) and len(body["messages"]) > 2:
            return boxed(42)
        return Reply(content="Let me compute.\n```python\nvalue = 6 * 7\nprint(value)\n```")

    with world(lambda body: TERMINATE, agent) as server:
        run = train(write_config, server, tmp_path, [("What is 6 times 7?", "42")] * 3,
                    optimizer={"epochs": 0})
    record = run.snapshot(0).rollouts()[0]
    assert record.correct and record.code_runs == 1
    assert record.messages[3]["role"] == "user" and "42" in record.messages[3]["content"]


def test_an_epoch_starts_first_the_rollouts_that_took_longest_last_time(write_config, tmp_path):
    """An epoch lasts as long as its slowest rollout: starting the long ones first shortens the tail. The epoch's
    records stay in task order."""
    slow = PRODUCTS[2][0]

    def agent(body):
        turns_done = sum(m["role"] == "assistant" for m in body["messages"])
        if question(body) == slow and turns_done < 2:
            return Reply(content="Let me think about it.")
        a, b = numbers(question(body))
        return boxed(a * b)

    with world(lambda body: add("multiply", MULTIPLY), agent) as server:
        run = train(write_config, server, tmp_path, optimizer={"epochs": 1}, llm={"concurrency": 1},
                    task={"train_size": 3, "test_size": 0})
    first_turns = [question(body) for body in server.requests
                   if not is_optimizer(body) and not any(m["role"] == "assistant" for m in body["messages"])]
    tasks = [q for q, _ in PRODUCTS]
    assert first_turns == [*tasks, slow, *tasks[:2]]
    assert [r.turns for r in run.snapshot(0).rollouts()] == [1, 1, 3]
    assert [r.question for r in run.snapshot(1).rollouts()] == tasks


def test_run_directory_holds_the_documented_files(write_config, tmp_path):
    with world(lambda body: add("multiply", MULTIPLY) if "multiply" not in list_b(body) else TERMINATE) as server:
        run = train(write_config, server, tmp_path, optimizer={"epochs": 1})
    for name in ("config.yaml", "run.json", "events.jsonl", "best.json"):
        assert (run.path / name).is_file(), name
    epoch = run.path / "epoch-1"
    for name in ("functions.json", "metrics.json", "rollouts.jsonl", "functions/multiply.py"):
        assert (epoch / name).is_file(), name
    record = json.loads((epoch / "rollouts.jsonl").read_text().splitlines()[0])
    assert {"id", "gold", "prediction", "correct", "messages"} <= set(record)
    info = run.info()
    assert info.config_hash and info.packages["openai"] and info.sandbox
    assert not list(run.path.glob(".epoch-*"))  # no temporary snapshot folders left behind


def test_a_function_needing_a_package_the_sandbox_lacks_is_rejected_with_what_is_available(write_config, tmp_path):
    payload = function_payload("multiply", "def multiply(a, b):\n    import no_such_package_xyz\n    return a * b\n")
    reply = tool_call("add_function", {**payload, "packages": "no_such_package_xyz"})

    with world(lambda body: reply) as server:
        run = train(write_config, server, tmp_path, optimizer={"epochs": 1, "max_actions": 1,
                                                               "max_action_retries": 0})
    action = run.snapshot(1).metrics.actions[0]
    assert action.status == "rejected"
    assert "no_such_package_xyz" in action.error and "sympy" in action.error
