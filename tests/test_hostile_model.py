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
    MULTIPLY,
    TERMINATE,
    add,
    boxed,
    function_payload,
    has_rejected_sets,
    is_optimizer,
    list_b,
    multiplying_agent,
    question,
    react_action,
    react_answer,
)

STUCK = "[" * 5000  # a small model repeating a token until max_tokens
DEEP_CODE = "def f(a, b):\n    return " + "-" * 100_000 + "a"  # MemoryError in the parser
LONG_SUM = "def f(a, b):\n    return " + "a + " * 10_000 + "b"  # RecursionError in the parser
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
        if "2 times 3" in task:  # arguments sent as an object instead of JSON text, as some servers do
            return react_answer("\\boxed{6}") if react else OBJECT_ARGUMENTS
        return react_action(f"m{LONE}", {"a": LONE}) if react else tool_call(f"m{LONE}", {"a": LONE})
    return respond


AGENT_TASKS = [*PRODUCTS, ("What is 2 times 3?", "6")]
PRODUCTS_BY_QUESTION = dict(AGENT_TASKS)
OBJECT_ARGUMENTS = Reply(tool_calls=[{"id": "c", "type": "function", "function": {"name": "f", "arguments": {"a": 2}}}])


def encodable(value: Any) -> bool:
    json.dumps(value, ensure_ascii=False).encode()
    return True


@pytest.mark.slow
@pytest.mark.parametrize("agent", ["assistant", "react"])
def test_hostile_agent_replies_cost_nothing_and_a_resume_replays_them_from_the_cache(write_config, tmp_path, agent):
    down = {"on": True}
    with FakeOpenAI(hostile_agent(down, react=agent == "react")) as server:
        data = write_problems(tmp_path / "problems.jsonl", AGENT_TASKS)
        config = write_config(server.base_url, data, agent={"type": agent},
                              task={"train_size": 4, "test_size": 0}, optimizer={"epochs": 0})
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
        [unknown] = records["p3"].function_calls
        assert not unknown.ok and "there is no function named 'f'" in unknown.error
    else:  # the ReAct python tool takes what it cannot read as code, which then fails to compile
        assert records["p0"].code_errors == 1
    [surrogates] = records["p2"].function_calls
    assert not surrogates.ok and surrogates.name == "m\ufffd"
    assert "\ufffd" in json.dumps(records["p1"].messages, ensure_ascii=False)


def rejections(body: dict[str, Any]) -> list[str]:
    return [str(m["content"]) for m in body["messages"] if m["role"] == "tool" and "Rejected" in str(m["content"])]


MULTIPLY_ARGS = {"a": {"type": "integer"}, "b": {"type": "integer"}}
HOSTILE_ACTIONS = [  # the optimizer's attempts, in order; each used to end the run, the last one is fine
    tool_call("add_function", function_payload("f", DEEP_CODE)),
    tool_call("add_function", STUCK),
    add("multiply", MULTIPLY, {"a": {"type": "array"}, "b": {"type": "integer"}}),
    Reply(content=f"Adding multiply {LONE}", tool_calls=add("multiply", MULTIPLY, MULTIPLY_ARGS).tool_calls),
]


def hostile_optimizer(down: dict[str, bool]):
    """While `down`, the endpoint fails the optimizer's last attempt, so the run stops in the middle of its step."""
    def respond(body: dict[str, Any]) -> Reply | Fault:
        if not is_optimizer(body):
            return multiplying_agent(body)
        if "multiply" in list_b(body):
            return TERMINATE
        attempt = len(rejections(body))
        if down["on"] and attempt == len(HOSTILE_ACTIONS) - 1:
            return Fault(500)
        return HOSTILE_ACTIONS[attempt]
    return respond


@pytest.mark.slow
def test_hostile_optimizer_replies_are_rejected_actions_and_a_resume_replays_them_from_the_cache(write_config,
                                                                                              tmp_path):
    down = {"on": True}
    with FakeOpenAI(hostile_optimizer(down)) as server:
        data = write_problems(tmp_path / "problems.jsonl", PRODUCTS)
        config = write_config(server.base_url, data, task={"train_size": 3, "test_size": 0},
                              optimizer={"epochs": 1, "max_actions": 1, "max_action_retries": 4})
        first = api.train(config).run
        assert first.info().status == "failed" and "endpoint kept failing" in first.info().reason
        down["on"] = False
        run = api.resume(first.path).run
        attempts = [b for b in server.requests if is_optimizer(b) and "multiply" not in list_b(b)]
    assert run.info().status == "finished"
    [action] = run.snapshot(1).metrics.actions
    assert (action.action, action.name, action.status, action.attempts) == ("add_function", "multiply", "applied", 4)
    assert "\ufffd" in action.reason and run.snapshot(1).metrics.status == "accepted"
    told = rejections(attempts[-1])
    assert "nested too deeply" in told[0] and "nested" in told[1] and "`items`" in told[2]
    # the hostile attempts were sent once each: the resume replayed them from the cache
    assert [len(rejections(b)) for b in attempts][:4] == [0, 1, 2, 3]


REFUSED_SCHEMA = {"a": {"type": "integer", "format": "int128"}, "b": {"type": "integer"}}
SCHEMA_REFUSAL = Fault(400, message="Invalid schema for function 'multiply': In context=('properties', 'a'), "
                       "'int128' is not a supported format.", param="tools[0].function.parameters",
                       code="invalid_function_parameters")


def refusing_endpoint(body: dict[str, Any]) -> Reply | Fault:
    """Refuses the agent's requests offering a tool with the `int128` format, and the optimizer's second attempt."""
    if is_optimizer(body):
        if rejections(body):
            return Fault(400, message="this conversation holds a message the server cannot accept")
        if has_rejected_sets(body):  # epoch 2, after epoch 1's set was rolled back
            return tool_call("remove_function", {"name": "nothing"})  # rejected, then the retry is refused
        return add("multiply", MULTIPLY, REFUSED_SCHEMA)
    if "int128" in json.dumps(body.get("tools")):
        return SCHEMA_REFUSAL
    return multiplying_agent(body)


@pytest.mark.slow
def test_functions_whose_schema_the_endpoint_refuses_are_rollout_errors_of_that_set_not_an_outage(write_config,
                                                                                                   tmp_path):
    with FakeOpenAI(refusing_endpoint) as server:
        data = write_problems(tmp_path / "problems.jsonl", PRODUCTS)
        config = write_config(server.base_url, data, task={"train_size": 3, "test_size": 0},
                              optimizer={"epochs": 2, "max_actions": 1}, llm={"max_outage_s": 600})
        run = api.train(config).run
    assert run.info().status == "finished"
    refused = run.snapshot(1)
    assert refused.metrics.status == "rolled_back" and refused.metrics.train_errors == 3
    for record in refused.rollouts():
        assert record.stop_reason == "request_refused" and "Invalid schema for function 'multiply'" in record.error
    [action] = run.snapshot(2).metrics.actions  # the optimizer's own refused request: a rejected action
    assert action.status == "rejected" and "cannot accept" in action.error
