"""Validation of optimizer-written functions, and FunctionSet edits."""

from __future__ import annotations

import json

import pytest

from agenttrain.functions import FunctionSet, InvalidFunction, build_function, parse_packages, parse_parameters

CODE = "def area(width, height):\n    return width * height\n"
PROPS = {"width": {"type": "number"}, "height": {"type": "number"}}


def test_the_papers_properties_object_and_a_full_schema_are_both_accepted():
    short = parse_parameters(json.dumps(PROPS))
    full = parse_parameters(json.dumps({"type": "object", "properties": PROPS, "required": ["width"]}))
    assert short == {"type": "object", "properties": PROPS, "required": ["width", "height"]}
    assert full["required"] == ["width"]


@pytest.mark.parametrize(
    ("name", "arguments", "code", "reason"),
    [
        ("area", "{not json", CODE, "not valid JSON"),
        ("area", json.dumps(PROPS), "def area(width, height):\n    return width *\n", "does not compile"),
        ("area", json.dumps(PROPS), "def size(width, height):\n    return 1\n", "def area"),
        ("area", json.dumps({"width": PROPS["width"]}), CODE, "do not match"),
        ("area", json.dumps({"width": "number"}), CODE, "its schema must be an object"),
        ("2area", json.dumps(PROPS), CODE, "identifier"),
        ("python", json.dumps(PROPS), CODE, "reserved"),
        ("area", json.dumps(PROPS), "", "full Python function"),
    ],
)
def test_invalid_functions_are_rejected_with_a_reason(name, arguments, code, reason):
    with pytest.raises(InvalidFunction, match=reason):
        build_function(name, "Area of a rectangle.", arguments, "", code)


def test_a_valid_function_keeps_its_code_and_packages():
    function = build_function("area", "Area of a rectangle.", json.dumps(PROPS), "sympy, numpy", CODE)
    assert function.code == CODE and function.packages == ("sympy", "numpy")
    tool = function.to_openai_tool()
    assert tool["function"]["name"] == "area" and tool["function"]["parameters"]["properties"] == PROPS


def test_function_set_edits_return_new_sets_and_check_names():
    area = build_function("area", "Area.", json.dumps(PROPS), "", CODE)
    functions = FunctionSet().add(area)
    assert functions.names == ["area"] and FunctionSet().names == []
    with pytest.raises(InvalidFunction, match="already exists"):
        functions.add(area)
    with pytest.raises(InvalidFunction, match="no function named 'volume'"):
        functions.remove("volume")
    assert functions.remove("area").names == []
    round_trip = FunctionSet.from_json(json.loads(json.dumps(functions.to_json())))
    assert round_trip == functions


@pytest.mark.parametrize(("raw", "expected"), [("", ()), ("none", ()), ("sympy numpy", ("sympy", "numpy")),
                                               (["sympy", "sympy"], ("sympy",))])
def test_packages_field_forms(raw, expected):
    assert parse_packages(raw) == expected
