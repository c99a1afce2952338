"""Requests that outgrow the model's context window, against the fake server answering as llama.cpp does:
the optimizer shrinks its prompt and carries on, an agent conversation ends with stop_reason context_length."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from agenttrain import api
from agenttrain.endpoint.context_window import is_context_error
from tests.support.fake_openai import FakeOpenAI, Fault, text
from tests.support.files import write_problems
from tests.support.scripted import MULTIPLY, TERMINATE, add, agent_reply, is_optimizer, list_b, multiplying_agent

LLAMA_CPP_OVERFLOW = "the request exceeds the available context size, try increasing it"


def is_list_writer(body: dict[str, Any]) -> bool:
    return any(t["function"]["name"] in ("replace_functions", "create_functions") for t in body.get("tools") or [])
PRODUCTS = [("What is 6 times 7?", "42"), ("What is 5 times 8?", "40"), ("What is 3 times 9?", "27")]


def request_chars(body: dict[str, Any]) -> int:
    return len(json.dumps(body["messages"])) + len(json.dumps(body.get("tools", [])))


def test_servers_context_errors_are_recognised_and_others_are_not():
    assert is_context_error(400, None, LLAMA_CPP_OVERFLOW)
    assert is_context_error(400, None, "This model's maximum context length is 4096 tokens. However, you asked 5000")
    assert is_context_error(400, "context_length_exceeded", "too long")
    assert not is_context_error(400, None, "invalid temperature")
    assert not is_context_error(500, None, LLAMA_CPP_OVERFLOW)


@pytest.mark.slow
def test_the_optimizer_shrinks_a_request_the_server_finds_too_long_and_sends_its_reply_limit(write_config, tmp_path):
    limit = 9000  # characters the fake "context" holds; the first optimizer prompt is larger
    seen: list[dict[str, Any]] = []

    def respond(body: dict[str, Any]):
        if not is_optimizer(body):
            return agent_reply(body, multiplying_agent(body))
        seen.append(body)
        if request_chars(body) > limit:
            return Fault(400, message=LLAMA_CPP_OVERFLOW)
        return TERMINATE if "multiply" in list_b(body) else add("multiply", MULTIPLY)

    long_problems = [(q + " " + "Think carefully. " * 150, a) for q, a in PRODUCTS]
    with FakeOpenAI(respond) as server:
        data = write_problems(tmp_path / "problems.jsonl", long_problems)
        optimizer = {"max_prompt_tokens": 6000, "max_tokens": 300, "epochs": 1}
        run = api.train(write_config(server.base_url, data, optimizer=optimizer)).run
    assert run.info().status == "finished"
    assert request_chars(seen[0]) > limit and request_chars(seen[-1]) <= limit  # shrunk until it fit
    assert all(body["max_tokens"] == 300 for body in seen)
    assert [a.status for a in run.snapshot(1).metrics.actions] == ["applied", "terminate"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["progressive", "all_at_once", "tool_creation"])
def test_an_optimizer_request_that_never_fits_is_a_recorded_action_not_a_failed_run(write_config, tmp_path, method):
    """Every method fits its prompt the same way: shorter each time the server refuses it, then a rejected action
    saying so; never an endpoint outage that ends the run as failed."""
    def respond(body: dict[str, Any]):
        if is_optimizer(body) or is_list_writer(body):
            return Fault(400, message=LLAMA_CPP_OVERFLOW)
        return agent_reply(body, multiplying_agent(body))

    with FakeOpenAI(respond) as server:
        data = write_problems(tmp_path / "problems.jsonl", PRODUCTS)
        config = write_config(server.base_url, data, optimizer={"epochs": 1, "method": method},
                              llm={"max_outage_s": 60})
        started = time.monotonic()
        run = api.train(config).run
    assert run.info().status == "finished" and time.monotonic() - started < 30  # no wait for an "outage"
    [action] = run.snapshot(1).metrics.actions
    assert action.status == "rejected" and "does not fit the model's context" in (action.error or "")
    sizes = [request_chars(b) for b in server.requests if is_optimizer(b) or is_list_writer(b)]
    assert len(sizes) > 1 and sizes == sorted(sizes, reverse=True) and sizes[-1] < sizes[0]  # resent shorter


@pytest.mark.slow
def test_an_agent_conversation_that_outgrows_the_context_ends_with_context_length(write_config, tmp_path):
    def respond(body: dict[str, Any]):
        if is_optimizer(body):
            return TERMINATE
        if len(body["messages"]) > 2:  # the second turn no longer fits
            return Fault(400, message=LLAMA_CPP_OVERFLOW)
        return text("Let me think about this.")  # no answer yet: the agent asks it to go on

    with FakeOpenAI(respond) as server:
        data = write_problems(tmp_path / "problems.jsonl", PRODUCTS)
        run = api.train(write_config(server.base_url, data, optimizer={"epochs": 1})).run
    assert run.info().status == "finished"
    records = run.snapshot(0).rollouts()
    assert {r.stop_reason for r in records} == {"context_length"}
    assert run.snapshot(0).metrics.train_errors == 0  # the model's limit, not an endpoint failure
