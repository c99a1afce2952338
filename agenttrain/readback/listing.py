"""`agenttrain runs`: one summary line per run directory."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agenttrain.errors import UserError
from agenttrain.readback.history import load_evaluations, usage_cost
from agenttrain.rundir.directory import RunDir, find_runs
from agenttrain.rundir.records import RunInfo


@dataclass(frozen=True)
class RunSummary:
    run: str
    name: str | None = None
    status: str | None = None
    started: str | None = None
    epochs: int = 0  # epoch folders saved, the baseline (epoch 0) included
    last_epoch: int | None = None  # the last one saved: a run that "ran 2 epochs" after its baseline shows 2
    best_epoch: int | None = None
    best_train_accuracy: float | None = None
    test_epoch: int | None = None  # which evaluated epoch `test_accuracy` belongs to
    test_accuracy: float | None = None
    cost_usd: float = 0.0  # training plus every evaluation
    error: str | None = None  # why the run could not be read

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _status(run: RunDir, info: RunInfo) -> str:
    """run.json's status, except that a "running" run whose process is gone was killed."""
    status = info.status
    return "killed" if status == "running" and run.locked_by() is None else status


def summarise_run(path: Path) -> RunSummary:
    run = RunDir.open(path)
    info, epochs = run.info(), run.epochs()
    best_epoch = run.best_if_any()
    evaluations = load_evaluations(run)
    tests = [e for e in evaluations if e.split == "test"]
    # the best epoch's test result when it was evaluated, else the latest evaluated epoch's
    test = next((e for e in tests if e.epoch == best_epoch), tests[-1] if tests else None)
    return RunSummary(
        run=str(run.path), name=info.name, status=_status(run, info), started=info.started, epochs=len(epochs),
        last_epoch=epochs[-1] if epochs else None, best_epoch=best_epoch,
        best_train_accuracy=None if best_epoch is None else run.snapshot(best_epoch).metrics.train_accuracy,
        test_epoch=test.epoch if test else None, test_accuracy=test.accuracy if test else None,
        cost_usd=usage_cost(info.usage or {}) + sum(e.cost_usd for e in evaluations),
    )


def list_runs(output_dir: Path) -> list[RunSummary]:
    """Every run under `output_dir`, oldest first; a damaged run is listed with its error, not fatal."""
    if not output_dir.is_dir():
        raise UserError(f"{output_dir}: no such directory; pass the folder that holds your runs (default ./runs)")
    summaries = []
    for path in find_runs(output_dir):
        try:
            summaries.append(summarise_run(path))
        except UserError as exc:
            summaries.append(RunSummary(run=str(path), status="unreadable", error=str(exc)))
    return summaries

