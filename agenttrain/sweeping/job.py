"""One sweep job, as a worker runs it: train (or resume, or reuse) the run, then evaluate epoch 0 and the best
epoch on the test split (and on each transfer task). `run_job` is the function any executor calls.

A run the sweep's budget stopped (`budget_exhausted` with its own budget left) is not evaluated; a rerun of the sweep
with a larger budget continues it. Its folder stays an ordinary run: `train --resume` continues it too."""

from __future__ import annotations

from pathlib import Path

from agenttrain.config import ConfigError, load_experiment
from agenttrain.endpoint.usage import BudgetExhausted, UsageMeter
from agenttrain.errors import UserError
from agenttrain.readback.history import usage_cost, usage_tokens
from agenttrain.rundir.directory import RunDir, find_runs, read_run_json
from agenttrain.rundir.records import EvalResult
from agenttrain.sweeping.ledger import Spend
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


def stopped_by_sweep(run: RunDir) -> bool:
    """The run stopped as `budget_exhausted` although its own budget is not spent: the sweep's budget stopped it."""
    if run.info().status != "budget_exhausted":
        return False
    experiment = load_experiment(run.path / "config.yaml")
    meter = UsageMeter(experiment.budget, experiment.llm.prices)
    meter.restore(run.spent())
    try:
        meter.check_budget()
    except BudgetExhausted:
        return False
    return True


def train_job(job: SweepJob) -> RunDir:
    run = find_job_run(job)
    if run is None:
        return train(Path(job.config), job.overrides, use_cache=job.use_cache).run
    if run.info().status not in DONE or stopped_by_sweep(run):
        resume(run.path, use_cache=job.use_cache, trust_endpoint=named_alike(run, job.experiment()))
    return run


def run_job(job: SweepJob) -> str:
    """Train and evaluate; returns the run directory. Evaluations already on disk are reused, not rerun."""
    run = train_job(job)
    info = run.info()
    if info.status not in DONE or stopped_by_sweep(run):
        raise UserError(f"{run.path}: training ended as {info.status!r} ({info.reason})")
    trusted = named_alike(run, job.experiment())  # the endpoints of the sweep's own config
    try:
        eval_epochs(run.path, EVALUATED_EPOCHS, "test", use_cache=job.use_cache, trust_endpoint=trusted)
        for task_config in job.transfer:
            eval_epochs(run.path, EVALUATED_EPOCHS, "test", use_cache=job.use_cache, task_config=Path(task_config),
                        trust_endpoint=trusted)
    except BudgetExhausted as exc:  # the sweep's: the run stays trained, and a rerun evaluates it
        raise UserError(f"{run.path}: not evaluated: {exc}") from None
    return str(run.path)


def job_spend(job: SweepJob) -> Spend:
    """What the job's run has spent so far, training and evaluations (nothing before it started)."""
    try:
        run = find_job_run(job)
    except UserError:  # its config changed: the sweep refuses the job, and its old run counts for nothing here
        return Spend()
    if run is None:
        return Spend()
    # run.json's usage is the complete one once the run has stopped (rollouts cut short are not journaled); the
    # journal's is the newer one while it runs, or after a kill
    usages = [max(run.spent(), run.info().usage or {}, key=usage_tokens)]
    for path in run.evals_dir.glob("*-epoch-*.json"):
        usages.append(EvalResult.read(read_run_json(path), run.format_version, path).usage)
    return Spend(sum(map(usage_cost, usages)), sum(map(usage_tokens, usages)))
