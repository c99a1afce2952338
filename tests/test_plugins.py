"""Plugins: a package outside agenttrain adds a task and a scorer through entry points, and trains with them.

The package is tests/plugin (`make install` installs it). The commands run in a child process, as a user
runs them, so the entry points are read the way an installed agenttrain reads them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from agenttrain.errors import UserError
from agenttrain.registry import Registry
from agenttrain.rundir.directory import RunDir
from agenttrain.scorers import judge
from tests.support.fake_openai import FakeOpenAI
from tests.support.scripted import MULTIPLY, TERMINATE, add, agent_reply, is_optimizer, list_b, multiplying_agent

PLUGIN = Path(__file__).parent / "plugin"
SOURCE = "agenttrain-products-example 0.1.0 (entry point agenttrain.{group}: {name})"


@pytest.fixture(scope="session", autouse=True)
def plugin_installed() -> None:
    """Install the example plugin when this environment lacks it (make install does it beforehand)."""
    if not any(e.name == "library" for e in metadata.entry_points(group="agenttrain.optimizers")):
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "-e", str(PLUGIN)],
                       check=True)


def agenttrain(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from agenttrain.cli import main; main()", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.slow
def test_plugins_lists_built_ins_and_what_each_package_registers():
    result = agenttrain("plugins", "--json")
    assert result.returncode == 0, result.stderr
    found = {(p["kind"], p["name"]): p for p in json.loads(result.stdout)["plugins"]}
    assert found["task", "products"]["source"] == SOURCE.format(group="tasks", name="products")
    assert found["task", "products"]["target"] == "agenttrain_products:ProductsTask"
    assert found["scorer", "last_integer"]["source"] == SOURCE.format(group="scorers", name="last_integer")
    assert found["task", "math"]["source"] == found["agent", "react"]["source"] == "agenttrain (built-in)"
    assert found["optimizer method", "progressive"]["source"] == "agenttrain (built-in)"
    assert found["optimizer method", "library"]["source"] == SOURCE.format(group="optimizers", name="library")
    assert {"learning_curve", "spend"} <= {name for kind, name in found if kind == "plot"}


@pytest.mark.slow
def test_a_plugin_task_and_scorer_train_end_to_end_with_the_task_s_own_config_keys(tmp_path):
    def reply(body):
        if is_optimizer(body):
            return TERMINATE if "multiply" in list_b(body) else add("multiply", MULTIPLY)
        return agent_reply(body, multiplying_agent(body))

    with FakeOpenAI(reply) as server:
        config = {
            "name": "products", "task": {"name": "products", "count": 5, "max_factor": 9, "train_size": 3,
                                         "test_size": 2},
            "agent": {"model": "agent-model", "max_turns": 4},
            "optimizer": {"model": "optimizer-model", "epochs": 2},
            "llm": {"base_url": server.base_url, "api_key_env": "NO_KEY_NEEDED", "cache": False},
            "sandbox": {"warm_workers": 1}, "output_dir": str(tmp_path / "runs"),
        }
        (tmp_path / "products.yaml").write_text(yaml.safe_dump(config))
        trained = agenttrain("train", "products.yaml", "--json", cwd=tmp_path)
        assert trained.returncode == 0, trained.stderr
        run = RunDir.open(Path(json.loads(trained.stdout)["run"]))
        evaluated = agenttrain("eval", str(run.path), "--json", cwd=tmp_path)
        assert evaluated.returncode == 0, evaluated.stderr
    assert [run.snapshot(e).metrics.status for e in run.epochs()] == ["baseline", "accepted", "unchanged"]
    assert [run.snapshot(e).metrics.train_accuracy for e in run.epochs()] == [0.0, 1.0, 1.0]
    record = run.snapshot(1).rollouts()[0]
    assert record.question.startswith("What is ") and record.extracted == record.gold
    assert (json.loads(evaluated.stdout)["accuracy"], json.loads(evaluated.stdout)["task"]) == (1.0, "products")
    assert "count: 5" in (run.path / "config.yaml").read_text()  # the task's own key, saved with the run


@pytest.mark.slow
def test_a_plugin_optimizer_method_and_a_scorer_that_reads_the_whole_rollout_train_end_to_end(tmp_path):
    """The method is one registered class behind the Optimizer protocol; the loop journals, snapshots and resumes
    it like a built-in. The scorer sees the rollout's function calls, not just the final text."""
    with FakeOpenAI(lambda body: agent_reply(body, multiplying_agent(body))) as server:
        config = {
            "name": "library", "task": {"name": "products", "count": 5, "train_size": 3, "test_size": 2},
            "agent": {"model": "agent-model", "max_turns": 4},
            "optimizer": {"model": "optimizer-model", "method": "library"},
            "llm": {"base_url": server.base_url, "api_key_env": "NO_KEY_NEEDED", "cache": False},
            "sandbox": {"warm_workers": 1}, "output_dir": str(tmp_path / "runs"),
        }
        (tmp_path / "library.yaml").write_text(yaml.safe_dump(config))
        trained = agenttrain("train", "library.yaml", "--json", cwd=tmp_path)
        assert trained.returncode == 0, trained.stderr
    run = RunDir.open(Path(json.loads(trained.stdout)["run"]))
    assert [run.snapshot(e).metrics.status for e in run.epochs()] == ["baseline", "accepted"]
    assert run.snapshot(1).functions.names == ["multiply"] and run.best_epoch() == 1
    assert run.info().reason == "offered the library's functions"
    assert not [b for b in server.requests if is_optimizer(b)]  # the method asked no optimizer model
    records = [run.snapshot(1).rollouts()[0], run.snapshot(0).rollouts()[0]]
    verdicts = [judge("called_multiply", r.prediction, r.gold, {"rollout": r.model_dump(mode="json")})
                for r in records]
    assert [v.correct for v in verdicts] == [True, False]  # the same answer counts only with the call
    assert verdicts[1].note == "multiply was not called"


@pytest.mark.slow
def test_a_config_naming_a_task_no_package_registers_lists_the_registered_ones(tmp_path):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"name": "x", "task": {"name": "prodcts"}}))
    result = agenttrain("validate", "bad.yaml", cwd=tmp_path)
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "task: unknown task 'prodcts'; did you mean 'products'? registered: gaia, inline, jsonl, math, products, " \
        "tabmwp" in message


def test_a_plugin_that_cannot_be_imported_is_named_with_the_fix(tmp_path, monkeypatch):
    dist = tmp_path / "broken_tasks-0.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-tasks\nVersion: 0.3\n")
    (dist / "entry_points.txt").write_text("[agenttrain.tasks]\nbroken = no_such_module_xyz:Task\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fresh = Registry("task", (), "agenttrain.tasks")
    with pytest.raises(UserError, match=r"broken-tasks 0.3 \(entry point agenttrain.tasks: broken\): cannot load "
                                        r"no_such_module_xyz:Task: .*fix or uninstall that package"):
        fresh.names()


def test_two_packages_registering_one_name_are_refused():
    kinds = Registry("scorer", (), None)
    kinds.register("same")(len)
    with pytest.raises(UserError, match=r"registers scorer 'same', which agenttrain \(built-in\) already registers"):
        kinds.register("same")(abs)
