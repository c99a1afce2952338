"""Hostile model output: whatever a model (agent or optimizer) writes costs at most that rollout or that action,
recorded with its reason, and a resume that replays it from the response cache gets past it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agenttrain import api
from agenttrain.agents.base import call_arguments, parse_tool_arguments
from agenttrain.agents.react_parse import parse_arguments
from agenttrain.endpoint.cache import request_key
from agenttrain.functions import InvalidFunction, build_function, parse_parameters
from agenttrain.readback.complexity import cyclomatic_complexity
from tests.support.fake_openai import FakeOpenAI, Fault, Reply, text, tool_call
from tests.support.files import write_problems
from tests.support.scripted import (
    boxed,
    question,
    react_action,
    react_answer,
)

STUCK = "[" * 5000  # a small model repeating a token until max_tokens
DEEP_CODE = "def f(a, b):\n    return " + "-" * 100_000 + "a"  # MemoryError in the parser
LONG_SUM = "def f(a, b):\n    return " + "a + " * 100_000 + "b"  # RecursionError in the parser
LONE = "\ud800"  # a lone UTF-16 surrogate, which JSON's \ud800 escape decodes to; not encodable as UTF-8
TWO = {"type": "object", "properties": {"a": {}, "b": {}}}


# -- the parsers are total: bad text is a ValueError the model is shown, never another exception ---------------


@pytest.mark.parametrize("raw", [STUCK, '{"a":' * 5000, "[" * 500 + "]" * 500])
def test_tool_arguments_nested_too_deep_are_an_error_the_model_sees(raw):
    with pytest.raises(ValueError, match="nested"):
        parse_tool_arguments(raw)
    call = {"id": "c", "function": {"name": "f", "arguments": raw}}
    with pytest.raises(ValueError, match="nested"):
        call_arguments(call)
    assert call["function"]["arguments"] == "{}"  # the conversation stays sendable


def test_tool_arguments_with_a_lone_surrogate_are_read_with_a_replacement_character():
    assert parse_tool_arguments('{"a": "x\\ud800y"}') == {"a": "x\ufffdy"}


@pytest.mark.parametrize("raw", [STUCK, '{"a":' * 5000, "[" * 500 + "]" * 500, "(" * 150 + ")" * 150])
def test_react_action_inputs_nested_too_deep_are_an_error_the_model_sees(raw):
    with pytest.raises(ValueError):
        parse_arguments(raw, TWO)


def test_a_react_action_input_too_deep_for_a_one_argument_tool_is_taken_as_text():
    code = {"type": "object", "properties": {"code": {"type": "string"}}}
    assert parse_arguments(STUCK, code) == {"code": STUCK}


@pytest.mark.parametrize("code", [DEEP_CODE, LONG_SUM, "def f(a, b):\n    return 1\x00",
                                  f"def f(a, b):\n    return '{LONE}'"], ids=["deep", "long", "nul", "surrogate"])
def test_optimizer_code_the_parser_cannot_take_is_a_rejected_action(code):
    with pytest.raises(InvalidFunction, match="`code`"):
        build_function("f", "does f", json.dumps({"a": {}, "b": {}}), "", code)


@pytest.mark.parametrize("code", [DEEP_CODE, LONG_SUM])
def test_complexity_of_code_too_deep_to_parse_is_a_syntax_error(code):
    with pytest.raises(SyntaxError):
        cyclomatic_complexity(code)


def test_optimizer_arguments_nested_too_deep_are_a_rejected_action():
    with pytest.raises(InvalidFunction, match="nested"):
        parse_parameters('{"a": ' * 5000)


@pytest.mark.parametrize(("schema", "problem"), [
    ({"xs": {"type": "array"}}, "items"),
    ({"xs": {"type": "array", "items": "integer"}}, "items"),
    ({"p": {"type": "object", "properties": {"xs": {"type": "array"}}}}, "items"),
    ({"x": {"type": "str"}}, "type"),
    ({"x": {"type": "string", "enum": []}}, "enum"),
    ({"x": {"type": "object", "properties": ["a"]}}, "properties"),
])
def test_a_parameter_schema_an_endpoint_would_refuse_is_a_rejected_action(schema, problem):
    with pytest.raises(InvalidFunction, match=problem):
        parse_parameters(json.dumps(schema))


def test_ordinary_parameter_schemas_are_accepted():
    schema = {"xs": {"type": "array", "items": {"type": "number"}}, "n": {"type": ["integer", "null"]},
              "opts": {"type": "object", "properties": {"k": {"type": "string", "enum": ["a", "b"]}}},
              "any": {"description": "anything"}}
    assert parse_parameters(json.dumps(schema))["properties"] == schema


def test_a_request_holding_a_lone_surrogate_still_has_a_cache_key():
    body = {"model": "m", "messages": [{"role": "user", "content": f"a{LONE}b"}]}
    assert len(request_key("http://x/v1", body, 0)) == 64


# -- end to end: hostile replies cost their rollout or action; a resume replays them from the cache ------------

PRODUCTS = [("What is 6 times 7?", "42"), ("What is 5 times 8?", "40"), ("What is 3 times 9?", "27")]
SURROGATE_CODE = "Let me compute " + LONE + ".\n```python\nprint('x' + chr(0xd800))\nraise ValueError(chr(0xdc00))\n```"
SURROGATE_REACT = f"Thought: {LONE}\nAction: python\nAction Input: raise ValueError(chr(0xdc00))"


def turns(body: dict[str, Any]) -> int:
    """The agent's turn this request asks for: 1 for the task alone, then one more per answer it got back."""
    return sum(1 for m in body["messages"] if m["role"] in ("user", "tool"))


def hostile_agent(down: dict[str, bool], react: bool = False):
    """Per task, a first reply that used to end the run; then the answer. While `down`, the endpoint fails the
    second task's second turn, so the run stops (resumable) with that task's hostile reply in the cache."""
    def respond(body: dict[str, Any]) -> Reply | Fault:
        task = question(body)
        if turns(body) > 1:
            if down["on"] and "5 times 8" in task:
                return Fault(500)
            answer = PRODUCTS_BY_QUESTION[task]
            return react_answer(f"\\boxed{{{answer}}}") if react else boxed(answer)
        if "6 times 7" in task:
            return react_action("python", STUCK) if react else tool_call("multiply", STUCK)
        if "5 times 8" in task:
            return text(SURROGATE_REACT) if react else text(SURROGATE_CODE)
        return react_action(f"m{LONE}", {"a": LONE}) if react else tool_call(f"m{LONE}", {"a": LONE})
    return respond


PRODUCTS_BY_QUESTION = dict(PRODUCTS)


def encodable(value: Any) -> bool:
    json.dumps(value, ensure_ascii=False).encode()
    return True


@pytest.mark.slow
@pytest.mark.parametrize("agent", ["assistant", "react"])
def test_hostile_agent_replies_cost_nothing_and_a_resume_replays_them_from_the_cache(write_config, tmp_path, agent):
    down = {"on": True}
    with FakeOpenAI(hostile_agent(down, react=agent == "react")) as server:
        data = write_problems(tmp_path / "problems.jsonl", PRODUCTS)
        config = write_config(server.base_url, data, agent={"type": agent},
                              task={"train_size": 3, "test_size": 0}, optimizer={"epochs": 0})
        first = api.train(config).run
        assert first.info().status == "failed" and "endpoint kept failing" in first.info().reason
        down["on"] = False
        run = api.resume(first.path).run
        first_turns = [b for b in server.requests if "5 times 8" in question(b) and turns(b) == 1]
    assert run.info().status == "finished"
    assert len(first_turns) == 1  # the resume replayed the hostile reply from the cache
    records = {r.id: r for r in run.snapshot(0).rollouts()}
    assert all(r.correct and r.error is None for r in records.values())
    assert encodable([r.to_json() for r in records.values()])
    if agent == "assistant":
        [stuck] = records["p0"].function_calls
        assert not stuck.ok and "nested" in stuck.error
    else:  # the ReAct python tool takes what it cannot read as code, which then fails to compile
        assert records["p0"].code_errors == 1
    [surrogates] = records["p2"].function_calls
    assert not surrogates.ok and surrogates.name == "m\ufffd"
    assert "\ufffd" in json.dumps(records["p1"].messages, ensure_ascii=False)
