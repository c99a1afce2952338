"""One agenttrain run as one MLflow run, through `MlflowClient` with explicit run ids (no global active run, so
a notebook's own MLflow run is left alone). run.json's `tracking` records the run id: a resumed run and a later
`agenttrain eval` log to the same MLflow run."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from agenttrain.config import Experiment, MlflowConfig
from agenttrain.readback.history import usage_cost, usage_tokens
from agenttrain.rundir.directory import RunDir
from agenttrain.rundir.records import EpochMetrics, EvalResult

ENV_PARENT_RUN = "AGENTTRAIN_MLFLOW_PARENT_RUN_ID"  # set by a sweep for the runs it starts: they become children
PARAM_CHARS = 500  # the longest parameter value every MLflow server accepts
BATCH = 100  # parameters per log_batch request (MLflow's limit)
STATUS = {"interrupted": "KILLED", "failed": "FAILED"}  # any other end is FINISHED


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """`{"agent": {"model": "x"}}` -> `{"agent.model": "x"}`; other values as JSON."""
    if isinstance(data, dict) and data:
        return {k: v for key, value in data.items() for k, v in flatten(value, f"{prefix}{key}.").items()}
    text = data if isinstance(data, str) else json.dumps(data)
    return {prefix.rstrip("."): text[:PARAM_CHARS]}


class MlflowRun:
    def __init__(self, client: Any, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    @classmethod
    def start(cls, settings: MlflowConfig, experiment: Experiment, run: RunDir) -> MlflowRun:
        """The MLflow run recorded in run.json (a resumed run), else a new one with the config as parameters."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(settings.tracking_uri)
        if recorded := cls.recorded(run, settings):
            client.update_run(recorded, status="RUNNING")
            return cls(client, recorded)
        parent = os.environ.get(ENV_PARENT_RUN)
        experiment_id = client.get_run(parent).info.experiment_id if parent else \
            experiment_id_of(client, settings.experiment or experiment.name)
        tags = {"agenttrain.run_dir": str(run.path), **({"mlflow.parentRunId": parent} if parent else {})}
        created = client.create_run(experiment_id, run_name=run.path.name, tags=tags)
        run.update_info(tracking={"mlflow": {"tracking_uri": settings.tracking_uri, "experiment_id": experiment_id,
                                             "run_id": created.info.run_id}})
        tracked = cls(client, created.info.run_id)
        tracked.log_params(flatten(experiment.model_dump(mode="json")))
        return tracked

    @classmethod
    def reopen(cls, settings: MlflowConfig, run: RunDir) -> MlflowRun | None:
        from mlflow.tracking import MlflowClient

        recorded = cls.recorded(run, settings)
        return cls(MlflowClient(settings.tracking_uri), recorded) if recorded else None

    @staticmethod
    def recorded(run: RunDir, settings: MlflowConfig) -> str | None:
        """The MLflow run id in run.json, if it was logged to the same tracking URI."""
        mlflow = (run.info().tracking or {}).get("mlflow") or {}
        return mlflow.get("run_id") if mlflow.get("tracking_uri") == settings.tracking_uri else None

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(key, value) for key, value in params.items()]
        for start in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, params=items[start:start + BATCH])

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])

    def log_epoch(self, run: RunDir, metrics: EpochMetrics) -> None:
        self.log_metrics(epoch_values(metrics), step=metrics.epoch)
        folder = run.path / f"epoch-{metrics.epoch}"
        for name in ("functions.json", "metrics.json"):
            self.client.log_artifact(self.run_id, str(folder / name), f"epoch-{metrics.epoch}")

    def log_eval(self, named: str, result: EvalResult) -> None:
        values = {f"{named}_accuracy": result.accuracy, f"{named}_correct": result.correct, f"{named}_n": result.n}
        if result.ci95:
            values |= {f"{named}_ci95_low": result.ci95[0], f"{named}_ci95_high": result.ci95[1]}
        self.log_metrics(values, step=result.epoch)

    def log_report(self, run: RunDir) -> None:
        from agenttrain.readback.reporting import write_report  # matplotlib: loaded only when a run ends tracked

        with tempfile.TemporaryDirectory(prefix="agenttrain-report-") as folder:
            write_report(run, Path(folder))
            self.client.log_artifacts(self.run_id, folder, "report")

    def end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=STATUS.get(status, "FINISHED"))


def experiment_id_of(client: Any, name: str) -> str:
    found = client.get_experiment_by_name(name)
    return str(found.experiment_id) if found is not None else str(client.create_experiment(name))


def epoch_values(metrics: EpochMetrics) -> dict[str, float]:
    """An epoch's step metrics: accuracies (validation ones too, for a method that validates), the kept set,
    tokens and cost (per role too)."""
    values: dict[str, float] = {
        "train_accuracy": metrics.train_accuracy, "train_correct": metrics.train_correct,
        "incumbent_accuracy": metrics.incumbent_accuracy, "best_accuracy": metrics.best_accuracy,
        "accepted": float(metrics.accepted), "function_count": metrics.function_count,
        "tokens": usage_tokens(metrics.usage), "cost_usd": usage_cost(metrics.usage), "duration_s": metrics.duration_s,
    }
    for role, usage in metrics.usage.items():
        values[f"{role}_tokens"] = usage_tokens({role: usage})
    validation = {"val_accuracy": metrics.val_accuracy, "val_correct": metrics.val_correct, "val_n": metrics.val_n}
    values |= {k: float(v) for k, v in validation.items() if v is not None}  # a method that validates (search)
    return values
