"""`agenttrain export --format package`: the functions as a package whose tests were generated from training."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agenttrain import api
from agenttrain.cli import app
from agenttrain.errors import UserError
from agenttrain.functions import FunctionSet
from agenttrain.packaging.cases import regression_cases
from agenttrain.rundir.records import FunctionCallRecord
from tests.support.run_factory import MULTIPLY, rollout, story_run

runner = CliRunner()


def pytest_in(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=folder,
                          capture_output=True, text=True, timeout=120)


def export_package(run_path: Path, out: Path) -> dict:
    result = runner.invoke(app, ["export", str(run_path), "--format", "package", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads(result.stdout)


def call(name: str, arguments: dict, result: str, ok: bool = True) -> FunctionCallRecord:
    return FunctionCallRecord(name=name, ok=ok, arguments=arguments, result=result, error=None if ok else "boom")


@pytest.mark.slow
def test_the_exported_tests_pass_as_exported_and_fail_once_a_function_changes_an_answer(tmp_path):
    exported = export_package(story_run(tmp_path).path, tmp_path / "story-functions")
    folder = Path(exported["path"])
    assert (exported["distribution"], exported["cases"]) == ("story-functions", 3)
    passed = pytest_in(folder)
    assert passed.returncode == 0 and "4 passed" in passed.stdout, passed.stdout + passed.stderr

    module = folder / "story_functions" / "__init__.py"
    module.write_text(module.read_text().replace("return a * b", "return a + b"))
    failed = pytest_in(folder)
    assert failed.returncode == 1, failed.stdout
    assert "2 failed, 2 passed" in failed.stdout and "multiply-t1" in failed.stdout


def test_every_ok_call_on_a_task_that_ended_right_is_a_case_once():
    records = [
        rollout("t1", True, [call("multiply", {"a": 6, "b": 7}, "42")]),
        rollout("t2", True, [call("multiply", {"b": 7, "a": 6}, "42"), call("multiply", {}, "", False)]),
        rollout("t3", False, [call("multiply", {"a": 1, "b": 1}, "2")]),  # a wrong task teaches nothing
        rollout("t4", True, [call("mutliply", {"a": 1, "b": 1}, "Error: no such function", False)]),
    ]
    found = regression_cases(FunctionSet((MULTIPLY,)), records)
    assert [(c.function, c.arguments, c.result, c.task) for c in found.cases] == [
        ("multiply", {"a": 6, "b": 7}, "42", "t1")]
    assert found.note() == "Every ok call on a task that ended right became a case."


def test_calls_that_cannot_be_replayed_are_counted_not_dropped_silently():
    records = [
        rollout("t1", True, [("multiply", True)]),  # a run from before arguments were recorded
        rollout("t2", True, [call("multiply", {"a": 1, "b": 2}, "3\n[... output truncated: 9 more "
                                                                             "characters]")]),
        rollout("t3", True, [call("multiply", {"a": 2, "b": 2}, "4")]),
        rollout("t4", True, [call("multiply", {"a": 2, "b": 2}, "5")]),  # chance or the clock
    ]
    found = regression_cases(FunctionSet((MULTIPLY,)), records)
    assert found.cases == []
    assert found.note() == (
        "Left out: 1 argument sets that returned different results in different calls; 1 calls recorded before "
        "arguments and results were kept; 1 calls whose result was cut at sandbox.max_output_chars.")


def test_an_export_never_writes_into_an_existing_folder(tmp_path):
    run = story_run(tmp_path)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="already exists and is not an empty folder"):
        api.export_folder(run.path, taken, fmt="package")
    assert [p.name for p in taken.iterdir()] == ["mine.txt"]
    result = runner.invoke(app, ["export", str(run.path), "--format", "mcp"])
    assert isinstance(result.exception, UserError) and "give it with --out DIR" in str(result.exception)
