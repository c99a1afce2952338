"""Training under real-world limits: budgets, failing endpoints, separate endpoints per role, batch training."""

from __future__ import annotations

from pathlib import Path

import pytest

from agenttrain import api
from tests.support.fake_openai import FakeOpenAI, Fault, Reply
from tests.support.files import write_problems
from tests.support.scripted import MULTIPLY, TERMINATE, add, is_optimizer, list_b, multiplying_agent, question

pytestmark = pytest.mark.slow

PRODUCTS = [(f"What is {a} times 3?", str(a * 3)) for a in range(2, 10)]


def optimizer(body):
    return TERMINATE if "multiply" in list_b(body) else add("multiply", MULTIPLY)


def both(body):
    return optimizer(body) if is_optimizer(body) else multiplying_agent(body)


def data(tmp_path: Path) -> Path:
    return write_problems(tmp_path / "problems.jsonl", PRODUCTS)


def test_a_budget_stops_the_run_gracefully_with_complete_snapshots(write_config, tmp_path):
    reply = Reply(content="\\boxed{0}", prompt_tokens=1000, completion_tokens=0)
    with FakeOpenAI(lambda body: optimizer(body) if is_optimizer(body) else reply) as server:
        config = write_config(server.base_url, data(tmp_path), task={"train_size": 4},
                              llm={"prices": {"agent-model": {"input": 1000.0, "output": 0.0}}, "concurrency": 1},
                              budget={"max_usd": 5.0}, optimizer={"epochs": 3})
        outcome = api.train(config)
    # each agent request costs $1: the baseline (4 requests) fits, the next epoch runs out
    assert outcome.status == "budget_exhausted"
    info = outcome.run.info()
    assert info.status == "budget_exhausted" and "max_usd" in info.reason
    assert outcome.run.epochs() == [0]
    assert info.usage["agent"]["cost_usd"] <= 5.0 + 1e-9
    assert len(outcome.run.snapshot(0).rollouts()) == 4


def test_an_endpoint_that_keeps_failing_stops_the_run_with_the_reason(write_config, tmp_path):
    with FakeOpenAI(lambda body: Fault(status=503)) as server:
        config = write_config(server.base_url, data(tmp_path), llm={"concurrency": 1, "max_outage_s": 1})
        outcome = api.train(config)
    info = outcome.run.info()
    assert outcome.status == "failed"
    assert server.base_url.split("/v1")[0] in info.reason or "503" in info.reason


def test_a_question_the_endpoint_always_fails_is_never_scored_and_stops_the_run_resumably(write_config, tmp_path):
    broken = PRODUCTS[0][0]

    def agent(body):
        return Fault(status=500) if question(body) == broken else multiplying_agent(body)

    with FakeOpenAI(lambda body: optimizer(body) if is_optimizer(body) else agent(body)) as server:
        config = write_config(server.base_url, data(tmp_path), task={"train_size": 8, "test_size": 0},
                              optimizer={"epochs": 1}, llm={"max_outage_s": 1})
        outcome = api.train(config)
    assert outcome.status == "failed" and "HTTP 500" in outcome.run.info().reason
    assert outcome.run.epochs() == []  # no accuracy was computed with the failed question counted as wrong
    rollouts = [e["record"] for e in outcome.run.events() if e["event"] == "rollout"]
    failed = [r for r in rollouts if r["question"] == broken]
    assert len(failed) >= 2 and all(r["stop_reason"] == "llm_error" for r in failed)  # tried again, journaled


def test_agent_and_optimizer_can_use_different_endpoints(write_config, tmp_path):
    with FakeOpenAI(multiplying_agent) as agent_server, FakeOpenAI(optimizer) as optimizer_server:
        config = write_config(agent_server.base_url, data(tmp_path), optimizer={
            "epochs": 1, "llm": {"base_url": optimizer_server.base_url}})
        outcome = api.train(config)
    assert outcome.run.snapshot(1).metrics.status == "accepted"
    assert optimizer_server.requests and all(is_optimizer(b) for b in optimizer_server.requests)
    assert not any(is_optimizer(b) for b in agent_server.requests)


def epoch_batches(run) -> list[set[str]]:
    return [{r.id for r in run.snapshot(e).rollouts()} for e in run.epochs()]


def test_batch_training_compares_with_the_incumbent_on_the_same_batch(write_config, tmp_path):
    with FakeOpenAI(both) as server:
        config = write_config(server.base_url, data(tmp_path), task={"train_size": 8, "test_size": 0},
                              optimizer={"epochs": 2, "batch_size": 3})
        run = api.train(config).run
    batches = epoch_batches(run)
    assert len(batches[0]) == 8 and all(len(b) == 3 for b in batches[1:])
    assert batches[1] != batches[2]  # a fresh seeded batch each epoch
    incumbent_runs = [e for e in run.events() if e["event"] == "rollout" and e["phase"] == "incumbent"]
    assert {e["record"]["id"] for e in incumbent_runs if e["epoch"] == 1} == batches[1]
    metrics = run.snapshot(1).metrics
    assert metrics.status == "accepted" and metrics.train_accuracy == 1.0


def test_batch_training_the_papers_way_compares_with_the_last_score(write_config, tmp_path):
    with FakeOpenAI(both) as server:
        config = write_config(server.base_url, data(tmp_path), task={"train_size": 8, "test_size": 0},
                              optimizer={"epochs": 1, "batch_size": 3, "batch_compare": "paper"})
        run = api.train(config).run
    assert not [e for e in run.events() if e["event"] == "rollout" and e["phase"] == "incumbent"]
    assert run.snapshot(1).metrics.status == "accepted"
