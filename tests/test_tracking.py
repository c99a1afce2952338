"""MLflow tracking: a tracked run logs its config, every epoch, its functions, the report and its evaluations to a
local MLflow store, read back here through MLflow's own client. Tracking that fails only warns."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from agenttrain import api
from agenttrain.config import load_experiment
from agenttrain.errors import MissingExtra
from agenttrain.tracking import sweep_parent
from tests.support.fake_openai import FakeOpenAI
from tests.support.files import write_problems
from tests.support.scripted import MULTIPLY, TERMINATE, add, agent_reply, is_optimizer, list_b, multiplying_agent

pytestmark = pytest.mark.slow

PRODUCTS = [("What is 6 times 7?", "42"), ("What is 5 times 8?", "40"), ("What is 3 times 9?", "27")]


def world() -> FakeOpenAI:
    def reply(body):
        if is_optimizer(body):
            return TERMINATE if "multiply" in list_b(body) else add("multiply", MULTIPLY)
        return agent_reply(body, multiplying_agent(body))

    return FakeOpenAI(reply)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A local MLflow file store (MLflow 3 asks for this opt-in to use one)."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return (tmp_path / "mlruns").as_uri()


def config(write_config, tmp_path: Path, server: FakeOpenAI, **sections) -> Path:
    return write_config(server.base_url, write_problems(tmp_path / "problems.jsonl", PRODUCTS), **sections)


def test_a_tracked_run_logs_its_config_epochs_functions_report_and_evaluations(write_config, tmp_path, store):
    with world() as server:
        path = config(write_config, tmp_path, server, tracking={"mlflow": {"tracking_uri": store,
                                                                          "experiment": "products"}})
        run = api.train(path).run
        api.eval_run(run.path)
    client = MlflowClient(store)
    tracked = client.get_run(run.info().tracking["mlflow"]["run_id"])
    assert client.get_experiment(tracked.info.experiment_id).name == "products"
    assert (tracked.info.run_name, tracked.info.status) == (run.path.name, "FINISHED")
    assert tracked.data.params["agent.model"] == "agent-model" and tracked.data.params["optimizer.epochs"] == "2"
    history = client.get_metric_history(tracked.info.run_id, "train_accuracy")
    assert [(m.step, m.value) for m in history] == [(0, 0.0), (1, 1.0), (2, 1.0)]
    assert [m.step for m in client.get_metric_history(tracked.info.run_id, "cost_usd")] == [0, 1, 2]
    assert tracked.data.metrics["test_accuracy"] == 1.0  # `agenttrain eval` of the best epoch, logged to the same run
    artifacts = {a.path for folder in ("epoch-1", "report") for a in client.list_artifacts(tracked.info.run_id, folder)}
    assert {"epoch-1/functions.json", "epoch-1/metrics.json", "report/report.md"} <= artifacts


def test_a_search_run_logs_its_validation_accuracy_at_every_candidate(write_config, tmp_path, store):
    problems = [*PRODUCTS, ("What is 4 times 7?", "28"), ("What is 2 times 9?", "18"), ("What is 8 times 3?", "24")]
    with world() as server:
        path = write_config(server.base_url, write_problems(tmp_path / "problems.jsonl", problems),
                            task={"train_size": 2, "val_size": 2, "test_size": 1},
                            optimizer={"method": "search", "epochs": 1, "candidates": 1, "minibatch": 2},
                            tracking={"mlflow": {"tracking_uri": store, "experiment": "products"}})
        run = api.train(path).run
    client = MlflowClient(store)
    run_id = run.info().tracking["mlflow"]["run_id"]
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val_accuracy")] == [(0, 0.0), (1, 1.0)]
    assert [m.value for m in client.get_metric_history(run_id, "val_n")] == [2.0, 2.0]


def test_runs_of_a_sweep_nest_under_one_parent_run(write_config, tmp_path, store, monkeypatch):
    monkeypatch.setenv("AGENTTRAIN_MLFLOW_URI", store)  # the environment alone turns tracking on
    with world() as server:
        path = config(write_config, tmp_path, server, optimizer={"epochs": 0})
        with sweep_parent(load_experiment(path), "my-sweep"):
            run = api.train(path).run
    client = MlflowClient(store)
    child = client.get_run(run.info().tracking["mlflow"]["run_id"])
    parent = client.get_run(child.data.tags["mlflow.parentRunId"])
    assert (parent.info.run_name, parent.info.status) == ("my-sweep", "FINISHED")
    assert parent.info.experiment_id == child.info.experiment_id


def test_a_tracker_that_fails_warns_and_training_goes_on(write_config, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    (tmp_path / "a-file").write_text("")
    unusable = (tmp_path / "a-file" / "mlruns").as_uri()  # a store inside a file cannot be made
    with world() as server, caplog.at_level(logging.WARNING, logger="agenttrain.tracking"):
        run = api.train(config(write_config, tmp_path, server, tracking={"mlflow": {"tracking_uri": unusable}})).run
    assert run.info().status == "finished" and run.info().tracking is None
    assert "MLflow tracking failed to start the run" in caplog.text and "training goes on" in caplog.text


def test_tracking_without_mlflow_installed_is_one_line_before_any_run_starts(write_config, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if the extra were not installed
    path = write_config("http://127.0.0.1:9/v1", write_problems(tmp_path / "problems.jsonl", PRODUCTS),
                        tracking={"mlflow": {}})
    with pytest.raises(MissingExtra, match=r"tracking.mlflow needs mlflow, which is not installed: "
                                           r"pip install 'agenttrain\[mlflow\]'"):
        api.train(path, offline=True)
    assert not (tmp_path / "runs").exists()
