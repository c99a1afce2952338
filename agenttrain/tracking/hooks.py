"""What training, evaluation and sweeps call: each a no-op where tracking is off, and none ever raises (a
failure is one warning, and the rest of the run goes untracked)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar, cast

from agenttrain.config import Experiment
from agenttrain.rundir.directory import RunDir
from agenttrain.rundir.records import EpochMetrics, EvalResult
from agenttrain.tracking.mlflow_run import ENV_PARENT_RUN, MlflowRun, experiment_id_of
from agenttrain.tracking.settings import mlflow_settings

logger = logging.getLogger(__name__)
R = TypeVar("R")
T = TypeVar("T")


class Guard:
    """Runs tracker calls until one fails: that failure is one warning, and later calls are skipped."""

    def __init__(self) -> None:
        self.failed = False

    def run(self, doing: str, action: Callable[[], T]) -> T | None:
        if self.failed:
            return None
        try:
            return action()
        except Exception as exc:  # whatever MLflow or its server raise, training must go on
            self.failed = True
            logger.warning("MLflow tracking failed to %s (%s); training goes on without tracking", doing, exc)
            return None


class EpochLogger:
    """The trainer's reporter, passed through, that also logs each epoch once it is saved."""

    def __init__(self, inner: Any, log_epoch: Callable[[EpochMetrics], None]) -> None:
        self.inner = inner
        self.log_epoch = log_epoch

    def epoch_done(self, metrics: EpochMetrics) -> None:
        if self.inner is not None:
            self.inner.epoch_done(metrics)
        self.log_epoch(metrics)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name) if self.inner is not None else lambda *args, **kwargs: None


@contextlib.contextmanager
def tracked(experiment: Experiment, run: RunDir, reporter: R) -> Iterator[R]:
    """Around a training run: start (or, resuming, reopen) its MLflow run, log each epoch as the trainer saves it,
    and at the end the report and how the run ended."""
    settings, guard = mlflow_settings(experiment), Guard()
    mlflow_run = None if settings is None else guard.run(
        "start the run", lambda: MlflowRun.start(settings, experiment, run))
    if mlflow_run is None:
        yield reporter
        return
    try:
        yield cast(R, EpochLogger(reporter, lambda m: guard.run(f"log epoch {m.epoch}",
                                                                lambda: mlflow_run.log_epoch(run, m))))
    finally:
        if run.epochs():
            guard.run("log the report", lambda: mlflow_run.log_report(run))
        guard.run("end the run", lambda: mlflow_run.end(run.info().status))


def log_evaluations(experiment: Experiment, run: RunDir, named: str, results: Sequence[EvalResult]) -> None:
    """`agenttrain eval` results as metrics of the run's MLflow run (`test_accuracy` at step = epoch)."""
    settings = mlflow_settings(experiment)
    if settings is None:
        return

    def log() -> None:
        if (mlflow_run := MlflowRun.reopen(settings, run)) is not None:  # a run trained untracked has none
            for result in results:
                mlflow_run.log_eval(named.replace("-", "_"), result)

    Guard().run("log the evaluation", log)


@contextlib.contextmanager
def sweep_parent(experiment: Experiment | None, name: str) -> Iterator[None]:
    """Around a sweep's jobs: one parent MLflow run, whose id the jobs' processes inherit and nest under."""
    settings = None if experiment is None else mlflow_settings(experiment)
    if settings is None:
        yield
        return
    guard = Guard()

    def start() -> tuple[Any, str]:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(settings.tracking_uri)
        experiment_id = experiment_id_of(client, settings.experiment or name)
        return client, client.create_run(experiment_id, run_name=name, tags={"agenttrain.sweep": name}).info.run_id

    started = guard.run("start the sweep's run", start)
    if started is None:
        yield
        return
    client, parent_id = started
    inherited = os.environ.get(ENV_PARENT_RUN)
    os.environ[ENV_PARENT_RUN] = parent_id
    try:
        yield
    finally:
        if inherited is None:
            del os.environ[ENV_PARENT_RUN]
        else:
            os.environ[ENV_PARENT_RUN] = inherited
        guard.run("end the sweep's run", lambda: client.set_terminated(parent_id))
