"""One sweep job, as a worker runs it: train (or resume, or reuse) the run, then evaluate epoch 0 and the best
epoch on the test split (and on each transfer task). `python -m agenttrain.sweep.job SPEC` runs one from the
JSON of a SweepJob; `run_job` is the function any executor calls."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from agenttrain import api
from agenttrain.config import ConfigError
from agenttrain.errors import UserError
from agenttrain.runs import RunDir, find_runs, read_run_json
from agenttrain.sweep.plan import SweepJob

DONE = ("finished", "early_stopped", "budget_exhausted")  # a rerun keeps these; any other status is resumed
EVALUATED_EPOCHS = ["0", "best"]


def find_job_run(job: SweepJob) -> RunDir | None:
    """The run this job started before (its name is the job id), refused if its config has changed since."""
    found = [RunDir(p) for p in find_runs(Path(job.runs_dir)) if read_run_json(p / "run.json").get("name") == job.id]
    if not found:
        return None
    run = found[-1]
    if run.info().get("config_hash") != job.experiment().content_hash():
        raise ConfigError(f"{run.path} was trained with a different config than {job.config} now gives; "
                          "sweep into a new --out folder, or delete that run to train it again")
    return run


def train_job(job: SweepJob) -> RunDir:
    run = find_job_run(job)
    if run is None:
        return api.train(Path(job.config), job.overrides, use_cache=job.use_cache).run
    if run.info().get("status") not in DONE:
        api.resume(run.path, use_cache=job.use_cache)
    return run


def run_job(job: SweepJob) -> str:
    """Train and evaluate; returns the run directory. Evaluations already on disk are reused, not rerun."""
    run = train_job(job)
    status = run.info().get("status")
    if status not in DONE:
        raise UserError(f"{run.path}: training ended as {status!r} ({run.info().get('reason')})")
    api.eval_epochs(run.path, EVALUATED_EPOCHS, "test", use_cache=job.use_cache)
    for task_config in job.transfer:
        api.eval_epochs(run.path, EVALUATED_EPOCHS, "test", use_cache=job.use_cache, task_config=Path(task_config))
    return str(run.path)


def main() -> None:
    """Worker entry point: the job's JSON as the only argument; one error line and exit status 1 on failure."""
    job = SweepJob.from_dict(json.loads(sys.argv[1]))
    try:
        print(run_job(job), flush=True)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
