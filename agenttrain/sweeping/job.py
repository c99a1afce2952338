"""One sweep job, as a worker runs it: train (or resume, or reuse) the run, then evaluate epoch 0 and the best
epoch on the test split (and on each transfer task). `run_job` is the function any executor calls."""

from __future__ import annotations

from pathlib import Path

from agenttrain.config import ConfigError
from agenttrain.errors import UserError
from agenttrain.rundir.directory import RunDir, find_runs
from agenttrain.sweeping.plan import SweepJob
from agenttrain.training.evaluating import eval_epochs
from agenttrain.training.launch import recorded_config_hash, resume, train
from agenttrain.training.trust import named_alike

DONE = ("finished", "early_stopped", "budget_exhausted")  # a rerun keeps these; any other status is resumed
EVALUATED_EPOCHS = ["0", "best"]


def find_job_run(job: SweepJob) -> RunDir | None:
    """The run this job started before (its name is the job id), refused if its config has changed since."""
    found = [run for run in map(RunDir, find_runs(Path(job.runs_dir))) if run.info().name == job.id]
    if not found:
        return None
    run = found[-1]
    if recorded_config_hash(run) != job.experiment().content_hash():
        raise ConfigError(f"{run.path} was trained with a different config than {job.config} now gives; "
                          "sweep into a new --out folder, or delete that run to train it again")
    return run


def train_job(job: SweepJob) -> RunDir:
    run = find_job_run(job)
    if run is None:
        return train(Path(job.config), job.overrides, use_cache=job.use_cache).run
    if run.info().status not in DONE:
        resume(run.path, use_cache=job.use_cache, trust_endpoint=named_alike(run, job.experiment()))
    return run


def run_job(job: SweepJob) -> str:
    """Train and evaluate; returns the run directory. Evaluations already on disk are reused, not rerun."""
    run = train_job(job)
    info = run.info()
    if info.status not in DONE:
        raise UserError(f"{run.path}: training ended as {info.status!r} ({info.reason})")
    trusted = named_alike(run, job.experiment())  # the endpoints of the sweep's own config
    eval_epochs(run.path, EVALUATED_EPOCHS, "test", use_cache=job.use_cache, trust_endpoint=trusted)
    for task_config in job.transfer:
        eval_epochs(run.path, EVALUATED_EPOCHS, "test", use_cache=job.use_cache, task_config=Path(task_config),
                    trust_endpoint=trusted)
    return str(run.path)
