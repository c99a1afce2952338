"""What real small models send, against a fake server that is as strict as llama.cpp: partial tool-call JSON,
prose instead of tool calls. Each ends in a recorded rollout or action, never a failed run."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agenttrain import api
from tests.support.fake_openai import FakeOpenAI, Fault, Reply, text, tool_call
from tests.support.files import write_problems
from tests.support.scripted import MULTIPLY, TERMINATE, add, boxed, is_optimizer, list_b, offered_tools, tool_results

pytestmark = pytest.mark.slow

PRODUCTS = [("What is 6 times 7?", "42"), ("What is 5 times 8?", "40"), ("What is 3 times 9?", "27")]


def holds_broken_json(body: dict[str, Any]) -> bool:
    """llama.cpp answers HTTP 500 to a conversation whose tool calls have unreadable arguments."""
    for message in body["messages"]:
        for call in message.get("tool_calls") or []:
            try:
                json.loads(call["function"]["arguments"])
            except json.JSONDecodeError:
                return True
    return False


def strict(respond):
    def server(body: dict[str, Any]) -> Reply | Fault:
        if holds_broken_json(body):
            return Fault(500, message="Failed to parse tool call arguments as JSON")
        return respond(body)
    return server


def test_partial_tool_call_json_is_an_error_the_model_sees_and_the_conversation_goes_on(write_config, tmp_path):
    def respond(body: dict[str, Any]) -> Reply:
        if is_optimizer(body):
            return TERMINATE if "multiply" in list_b(body) else add("multiply", MULTIPLY)
        if results := tool_results(body):
            return boxed(42) if "not valid JSON" in results[-1] else text("no")
        if "multiply" in offered_tools(body):
            return tool_call("multiply", '{"a": 6, "b')  # cut off by max_tokens
        return text("I think the answer is probably 42 but I am not sure.")  # prose, no answer

    with FakeOpenAI(strict(respond)) as server:
        data = write_problems(tmp_path / "problems.jsonl", PRODUCTS)
        config = write_config(server.base_url, data, agent={"max_turns": 3}, optimizer={"epochs": 1})
        run = api.train(config).run
    assert run.info().status == "finished"
    baseline = run.snapshot(0).rollouts()
    assert {r.stop_reason for r in baseline} == {"max_turns"} and not any(r.error for r in baseline)
    trained = run.snapshot(1).rollouts()
    for record in trained:
        [call] = record.function_calls
        assert not call.ok and "not valid JSON" in call.error and '{"a": 6, "b' in call.error
        assert record.stop_reason == "answered" and record.error is None
