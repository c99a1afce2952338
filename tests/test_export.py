"""`agenttrain export`: learned functions as an importable module, as OpenAI tools, or as functions.json."""

from __future__ import annotations

import importlib.util
import inspect
import json
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from typer.testing import CliRunner

from agenttrain.cli import app
from agenttrain.errors import UserError
from agenttrain.functions import Function, FunctionSet
from agenttrain.readback.exporting import add_docstring, python_module
from tests.support.run_factory import DIVIDE, MULTIPLY, story_run

runner = CliRunner()


def import_file(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def defined(code: str, name: str) -> Any:
    namespace: dict[str, Any] = {}
    exec(compile(code, "<exported>", "exec"), namespace)
    return namespace[name]


def export(*args: str) -> str:
    result = runner.invoke(app, ["export", *args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.stdout


# -- docstrings inserted into the code as written ---------------------------------------------------------


@pytest.mark.parametrize("code", [
    "def add_one(x):\n    return x + 1\n",
    "def add_one(x):\n    # a comment the author wrote\n    return x + 1\n",
    "def add_one(x):\n\treturn x + 1\n",
    "def add_one(x): return x + 1\n",
    "def add_one(x): y = x + 1; return y\n",
    "def add_one(\n    x,\n): return x + 1\n",
    "def add_one(x, unit='é'): return x + 1\n",  # ast columns count bytes, not characters
    "import functools\n\n\ndef add_one(x):\n    @functools.lru_cache\n    def step(y):\n        return y + 1\n"
    "    return step(x)\n",
    "def helper(v):\n    return v + 1\n\n\ndef add_one(x):\n    return helper(x)\n",
], ids=["plain", "comment", "tab", "one-line", "two-statements", "long-signature", "non-ascii", "decorated-inner",
        "helper-first"])
def test_the_description_becomes_the_docstring_and_the_code_still_runs(code):
    function = defined(add_docstring(code, "add_one", "Add one to x."), "add_one")
    assert inspect.getdoc(function) == "Add one to x."
    assert function(41) == 42


@pytest.mark.parametrize("text", [
    'Quote "this" and end with a quote"',
    "A backslash \\ and a \\boxed{} answer.",
    'Three quotes """ inside.',
    "First line.\n\nMore detail\n  indented.",
])
def test_any_description_text_survives_as_a_docstring(text):
    function = defined(add_docstring("def f(x):\n    return x\n", "f", text), "f")
    assert inspect.cleandoc(function.__doc__) == inspect.cleandoc(text)


def test_an_existing_docstring_is_kept():
    code = 'def f(x):\n    """The author\'s own words."""\n    return x\n'
    assert add_docstring(code, "f", "The description.") == code


# -- the command --------------------------------------------------------------------------------------------


def test_python_export_is_a_standalone_importable_module(tmp_path):
    run = story_run(tmp_path)
    target = tmp_path / "learned_functions.py"
    assert "wrote 2 functions of epoch 3" in export(str(run.path), "--out", str(target))
    source = target.read_text()
    assert f"run {run.path.name}, epoch 3" in source.splitlines()[0]
    assert "agenttrain import" not in source and "import agenttrain" not in source
    module = import_file(target)
    assert module.__all__ == ["multiply", "divide"]
    assert module.multiply(6, 7) == 42
    assert module.divide(1, 4) == Fraction(1, 4) and module.divide(1, 0) == "division by zero"
    assert inspect.getdoc(module.divide) == DIVIDE.description
    assert inspect.getdoc(module.multiply) == MULTIPLY.description


def test_an_older_epoch_prints_to_stdout(tmp_path):
    run = story_run(tmp_path)
    target = tmp_path / "epoch2.py"
    target.write_text(export(str(run.path), "--epoch", "2"))
    module = import_file(target)
    assert module.__all__ == ["multiply", "square"]
    assert module.multiply(6, 7) == 13  # the revision that epoch 2 tried, and rolled back
    assert module.square(3) == 9


def test_an_epoch_without_functions_exports_an_empty_module(tmp_path):
    run = story_run(tmp_path)
    target = tmp_path / "empty.py"
    target.write_text(export(str(run.path), "--epoch", "0"))
    assert import_file(target).__all__ == []


def test_openai_tools_format(tmp_path):
    run = story_run(tmp_path)
    tools = json.loads(export(str(run.path), "--format", "openai-tools"))
    assert [t["type"] for t in tools] == ["function", "function"]
    assert tools[1]["function"] == {"name": "divide", "description": DIVIDE.description,
                                    "parameters": DIVIDE.parameters}


def test_json_format_is_the_snapshot_function_set(tmp_path):
    run = story_run(tmp_path)
    exported = json.loads(export(str(run.path), "--format", "json", "--epoch", "epoch-1"))
    assert exported == json.loads((run.path / "epoch-1" / "functions.json").read_text())


def test_json_flag_describes_the_written_file(tmp_path):
    run = story_run(tmp_path)
    target = tmp_path / "tools.json"
    described = json.loads(export(str(run.path), "--format", "openai-tools", "--out", str(target), "--json"))
    assert described == {"path": str(target), "run": str(run.path), "epoch": 3, "format": "openai-tools",
                         "functions": ["multiply", "divide"]}
    assert len(json.loads(target.read_text())) == 2


@pytest.mark.parametrize(("args", "message"), [
    (["--format", "yaml"], "choose one of python, openai-tools, json"),
    (["--json"], "without --out"),
    (["--epoch", "9"], "no epoch 9"),
    (["--out", "."], "is a folder"),
])
def test_bad_requests_get_a_clear_error(tmp_path, args, message):
    run = story_run(tmp_path)
    result = runner.invoke(app, ["export", str(run.path), *args])
    assert isinstance(result.exception, UserError) and message in str(result.exception)
    assert result.stdout == ""


def test_help_shows_an_example():
    result = runner.invoke(app, ["export", "--help"])
    assert result.exit_code == 0 and "Example: agenttrain export" in result.stdout


def test_functions_whose_helpers_would_clash_in_one_module_are_refused():
    def area_with(scale: int) -> Function:
        code = f"SCALE = {scale}\n\n\ndef helper(x):\n    return x * SCALE\n"
        return Function(f"area{scale}", "Area.", {"type": "object", "properties": {"x": {}}, "required": ["x"]},
                        code + f"\n\ndef area{scale}(x):\n    return helper(x)\n")

    with pytest.raises(UserError, match="both define a different top-level 'SCALE'"):
        python_module(FunctionSet((area_with(2), area_with(3))), "test")
    shared_import = Function("f", "F.", {"type": "object", "properties": {}, "required": []},
                             "import math\n\n\ndef f():\n    return math.pi\n")
    other = Function("g", "G.", {"type": "object", "properties": {}, "required": []},
                     "import math\n\n\ndef g():\n    return math.e\n")
    assert "def g" in python_module(FunctionSet((shared_import, other)), "test")  # a shared import is fine
