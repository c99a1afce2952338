"""Paired evidence: every candidate is compared with the set it was judged against, task by task, with the exact
McNemar p-value, and `optimizer.accept: significant` keeps an edit only when that test says it helped."""

from __future__ import annotations

import pytest

from agenttrain import api
from tests.support.fake_openai import FakeOpenAI
from tests.support.files import write_problems
from tests.support.scripted import MULTIPLY, TERMINATE, add, is_optimizer, list_b, multiplying_agent

pytestmark = pytest.mark.slow

PRODUCTS = [(f"What is {a} times 7?", str(a * 7)) for a in range(2, 12)]
LUCKY = "def multiply(a, b):\n    return a * b if a == 2 else 0\n"  # right on one task only


def train(write_config, tmp_path, code: str, accept: str):
    def respond(body):
        if is_optimizer(body):
            return TERMINATE if "multiply" in list_b(body) else add("multiply", code)
        return multiplying_agent(body)

    tmp_path.mkdir(exist_ok=True)
    with FakeOpenAI(respond) as server:
        data = write_problems(tmp_path / "problems.jsonl", PRODUCTS)
        config = write_config(server.base_url, data, task={"train_size": 10, "test_size": 0},
                              optimizer={"epochs": 1, "accept": accept}, output_dir=str(tmp_path / "runs"))
        return api.train(config).run.snapshot(1).metrics


def test_one_fixed_task_is_an_improvement_but_not_evidence(write_config, tmp_path):
    plain = train(write_config, tmp_path / "plain", LUCKY, "improved")
    careful = train(write_config, tmp_path / "careful", LUCKY, "significant")
    assert plain.status == "accepted" and careful.status == "rolled_back"
    for metrics in (plain, careful):
        comparison = metrics.comparison
        assert (comparison.paired, comparison.fixed, comparison.broken) == (10, 1, 0)
        assert comparison.p_value == 1.0 and comparison.against == "the incumbent"


def test_a_set_that_fixes_every_task_passes_the_paired_test_and_says_where_its_function_helped(write_config, tmp_path):
    metrics = train(write_config, tmp_path, MULTIPLY, "significant")
    assert metrics.status == "accepted" and metrics.comparison.fixed == 10 and metrics.comparison.p_value < 0.01
    [effect] = metrics.attribution
    assert (effect.name, effect.calls, len(effect.tasks), effect.right) == ("multiply", 10, 10, 10)
    assert len(effect.fixed) == 10 and effect.broken == []
