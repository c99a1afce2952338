"""The optimizer prompt (contents and token budget) and action application, as pure functions."""

from __future__ import annotations

import json

import pytest

from agenttrain.functions import FunctionSet, InvalidFunction, build_function
from agenttrain.optimizers.progressive import (
    CHARS_PER_TOKEN,
    OPTIMIZER_TOOLS,
    SYSTEM_PROMPT,
    TOOLS_CHARS,
    TrainingRecord,
    apply_action,
    build_prompt,
)

SQUARE = build_function(
    "square", "Square a number.", '{"x": {"type": "number"}}', "", "def square(x):\n    return x * x\n"
)


def record(task_id: str, correct: bool, length: int = 200) -> TrainingRecord:
    messages = [{"role": "user", "content": f"problem {task_id} " + "x" * length},
                {"role": "assistant", "content": f"answer for {task_id}"}]
    return TrainingRecord(task_id, correct, messages)


def test_prompt_holds_both_lists_rejected_sets_histories_and_the_table():
    rejected = [(FunctionSet((SQUARE,)), 0.4), (FunctionSet(), 0.2)]
    prompt = build_prompt(FunctionSet(), 0.5, FunctionSet((SQUARE,)), rejected,
                          [record("t1", True), record("t2", False)], 60000)
    list_a, rest = prompt.split("## List B", 1)
    assert "success rate 0.50" in list_a and "square" not in list_a
    assert "square" in rest.split("## Function lists")[0]
    assert prompt.index("success rate 0.20") < prompt.index("success rate 0.40")  # ascending
    assert "t1: 1" in prompt and "t2: 0" in prompt
    assert "problem t1" in prompt and "problem t2" in prompt


def test_prompt_fits_the_budget_and_keeps_failed_histories_first():
    records = [record(f"ok{i}", True, 20000) for i in range(10)] + [record(f"bad{i}", False, 20000) for i in range(3)]
    budget = 8000
    prompt = build_prompt(FunctionSet(), 0.7, FunctionSet(), [], records, budget)
    assert (len(prompt) + len(SYSTEM_PROMPT) + TOOLS_CHARS) / CHARS_PER_TOKEN <= budget
    for i in range(3):
        assert f"### Task bad{i} (FAILED)" in prompt
    assert "omitted" in prompt
    assert all(f"ok{i}: 1" in prompt for i in range(10))  # the score table is never cut


def test_long_histories_keep_their_beginning_and_end():
    messages = [{"role": "user", "content": "START " + "y" * 50000 + " END"}]
    prompt = build_prompt(FunctionSet(), 0.0, FunctionSet(), [], [TrainingRecord("t", False, messages)], 6000)
    assert "START" in prompt and "END" in prompt and "characters omitted" in prompt


def test_apply_action_add_revise_remove():
    payload = {"name": "square", "description": "Square.", "arguments": json.dumps({"x": {"type": "number"}}),
               "packages": "", "code": "def square(x):\n    return x ** 2\n"}
    added, name = apply_action(FunctionSet(), "add_function", payload)
    assert name == "square" and added.names == ["square"]
    revised, _ = apply_action(FunctionSet((SQUARE,)), "revise_function", payload)
    assert "x ** 2" in revised.get("square").code
    removed, _ = apply_action(revised, "remove_function", {"name": "square"})
    assert removed.names == []
    with pytest.raises(InvalidFunction, match="needs the fields"):
        apply_action(FunctionSet(), "add_function", {"name": "square"})
    with pytest.raises(InvalidFunction, match="no function named"):
        apply_action(FunctionSet(), "revise_function", payload)
    with pytest.raises(InvalidFunction, match="unknown tool"):
        apply_action(FunctionSet(), "delete_everything", {})


def test_tool_schemas_require_the_papers_string_fields():
    tools = {t["function"]["name"]: t["function"]["parameters"] for t in OPTIMIZER_TOOLS}
    assert tools["add_function"]["required"] == ["name", "description", "arguments", "packages", "code"]
    assert tools["revise_function"]["required"] == tools["add_function"]["required"]
    assert tools["remove_function"]["required"] == ["name"]
    assert all(p["type"] == "string" for p in tools["add_function"]["properties"].values())
