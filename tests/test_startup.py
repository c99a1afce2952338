"""The command starts fast: reading runs and asking for help never imports the libraries only training needs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.run_factory import story_run

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("openai", "sympy", "math_verify", "numpy", "matplotlib", "ray", "mcp", "mlflow", "uvicorn")
# Runs the command in-process, then prints which of `watched` it had loaded (at exit, whatever the outcome).
PROBE = (
    "import atexit, json, sys\n"
    "watched = json.loads(sys.argv.pop(1))\n"
    "atexit.register(lambda: print(json.dumps(sorted(m for m in watched if m in sys.modules)), file=sys.stderr))\n"
    "from agenttrain.cli import main\n"
    "sys.argv = ['agenttrain', *sys.argv[1:]]\n"
    "main()\n"
)


def heavy_modules_loaded(*arguments: str, watched: tuple[str, ...] = HEAVY) -> list[str]:
    finished = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(watched), *arguments], capture_output=True, text=True, cwd=REPO,
        timeout=120,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr
    return json.loads(finished.stderr.strip().splitlines()[-1])


def test_importing_the_cli_loads_no_heavy_library() -> None:
    code = f"import sys, agenttrain.cli\nprint([m for m in {HEAVY!r} if m in sys.modules])"
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert imported.stdout.strip() == "[]"


@pytest.mark.parametrize("command", [["--help"], ["runs"], ["show"]])
def test_help_runs_and_show_load_no_heavy_library(command: list[str], tmp_path: Path) -> None:
    run = story_run(tmp_path)
    arguments = [*command, str(run.path)] if command == ["show"] else [*command]
    if command == ["runs"]:
        arguments.append(str(run.path.parent))
    assert heavy_modules_loaded(*arguments) == []


@pytest.mark.parametrize("command", [["--help"], ["train", "--help"], ["show", "--help"]])
def test_help_builds_no_config_or_record_model(command: list[str]) -> None:
    """Help is only text: building the config and record schemas (pydantic models) would cost more than it."""
    schemas = ("agenttrain.config", "agenttrain.rundir.records", "yaml")
    assert heavy_modules_loaded(*command, watched=(*HEAVY, *schemas)) == []
