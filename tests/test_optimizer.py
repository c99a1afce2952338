"""The optimizer prompt (contents and token budget) and action application, as pure functions."""

from __future__ import annotations

import json

import pytest

from agenttrain.functions import FunctionSet, InvalidFunction, build_function
from agenttrain.optimizers.actions import EDIT_TOOLS, apply_action
from agenttrain.optimizers.progressive import CLOSING
from agenttrain.optimizers.prompting import Prompt, build_prompt, overflow_ratio
from tests.support.records import scored

SQUARE = build_function(
    "square", "Square a number.", '{"x": {"type": "number"}}', "", "def square(x):\n    return x * x\n"
)


def record(task_id: str, correct: bool, length: int = 200):
    messages = [{"role": "user", "content": f"problem {task_id} " + "x" * length},
                {"role": "assistant", "content": f"answer for {task_id}"}]
    return scored(task_id, correct, messages=messages)


def prompt_of(*args, char_budget: int = 240_000) -> Prompt:
    return build_prompt(*args, char_budget, closing=CLOSING)


def test_prompt_holds_both_lists_rejected_sets_histories_and_the_table():
    rejected = [(FunctionSet((SQUARE,)), 0.4), (FunctionSet(), 0.2)]
    prompt = prompt_of(FunctionSet(), 0.5, FunctionSet((SQUARE,)), rejected,
                       [record("t1", True), record("t2", False)]).text
    list_a, rest = prompt.split("## List B", 1)
    assert "success rate 0.50" in list_a and "square" not in list_a
    assert "square" in rest.split("## Function lists")[0]
    assert prompt.index("success rate 0.20") < prompt.index("success rate 0.40")  # ascending
    assert "t1: 1" in prompt and "t2: 0" in prompt
    assert "problem t1" in prompt and "problem t2" in prompt


def test_prompt_fits_the_budget_keeps_failed_histories_first_and_says_what_it_left_out():
    records = [record(f"ok{i}", True, 20000) for i in range(10)] + [record(f"bad{i}", False, 20000) for i in range(3)]
    prompt = prompt_of(FunctionSet(), 0.7, FunctionSet(), [], records, char_budget=12000)
    assert len(prompt.text) <= 12000
    for i in range(3):
        assert f"### Task bad{i} (FAILED)" in prompt.text
    assert "omitted" in prompt.text
    assert all(f"ok{i}: 1" in prompt.text for i in range(10))  # the score table is never cut
    assert any("conversations left out" in cut for cut in prompt.cuts)


def test_a_tight_budget_shrinks_the_rejected_lists_to_names_and_keeps_one_readable_conversation():
    big = build_function("big", "Big.", '{"x": {"type": "number"}}', "", "def big(x):\n" + "    x += 1\n" * 400)
    rejected = [(FunctionSet((big,)), 0.1 * i) for i in range(5)]
    records = [record(f"t{i}", False, 5000) for i in range(4)]
    roomy = prompt_of(FunctionSet(), 0.0, FunctionSet(), rejected, records)
    tight = prompt_of(FunctionSet(), 0.0, FunctionSet(), rejected, records, char_budget=4000)
    assert "x += 1" in roomy.text and roomy.cuts == []
    assert "x += 1" not in tight.text and "Rejected set (training success rate 0.40): big" in tight.text
    assert tight.text.count("### Task") >= 1 and len(tight.text) < len(roomy.text)
    assert any("function names only" in cut for cut in tight.cuts)


def test_long_histories_keep_their_beginning_and_end():
    messages = [{"role": "user", "content": "START " + "y" * 50000 + " END"}]
    prompt = prompt_of(FunctionSet(), 0.0, FunctionSet(), [], [scored("t", False, messages=messages)],
                       char_budget=24000).text
    assert "START" in prompt and "END" in prompt and "characters omitted" in prompt


def test_the_sizes_in_a_servers_context_error_say_how_much_to_cut():
    assert overflow_ratio("request (4121 tokens) exceeds the available context size (4096 tokens)") == 4096 / 4121
    assert overflow_ratio("This model's maximum context length is 4096 tokens. However, you requested 5000 "
                          "tokens (4000 in the messages, 1000 in the completion).") == 4096 / 5000
    assert overflow_ratio("the request exceeds the available context size, try increasing it") is None


def test_apply_action_add_revise_remove():
    payload = {"name": "square", "description": "Square.", "arguments": json.dumps({"x": {"type": "number"}}),
               "packages": "", "code": "def square(x):\n    return x ** 2\n"}
    added, name = apply_action(FunctionSet(), "add_function", payload)
    assert name == "square" and added.names == ["square"]
    revised, _ = apply_action(FunctionSet((SQUARE,)), "revise_function", payload)
    assert "x ** 2" in revised.get("square").code
    removed, _ = apply_action(revised, "remove_function", {"name": "square"})
    assert removed.names == []
    with pytest.raises(InvalidFunction, match="missing the fields"):
        apply_action(FunctionSet(), "add_function", {"name": "square"})
    with pytest.raises(InvalidFunction, match="no function named"):
        apply_action(FunctionSet(), "revise_function", payload)
    with pytest.raises(InvalidFunction, match="unknown tool"):
        apply_action(FunctionSet(), "delete_everything", {})


def test_tool_schemas_require_the_papers_string_fields():
    tools = {t["function"]["name"]: t["function"]["parameters"] for t in EDIT_TOOLS}
    assert tools["add_function"]["required"] == ["name", "description", "arguments", "packages", "code"]
    assert tools["revise_function"]["required"] == tools["add_function"]["required"]
    assert tools["remove_function"]["required"] == ["name"]
    assert all(p["type"] == "string" for p in tools["add_function"]["properties"].values())
