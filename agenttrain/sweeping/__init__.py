"""`agenttrain sweep`: train and evaluate many configs and seeds as independent jobs, then tabulate them.

plan.py says what runs, job.py what one job does, runners.py and ray_jobs.py where it runs, ledger.py what the
jobs share (one request limit per endpoint, one budget; served by ledger_server.py), results.py the table. A rerun
reuses finished work: a job whose run is done and evaluated is not started again, an unfinished run resumes.
The package is not called `sweep` so that `agenttrain.sweep` stays the public function (api.sweep).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agenttrain.config import load_experiment, missing_files
from agenttrain.errors import UserError
from agenttrain.rundir.directory import write_json_atomic
from agenttrain.sweeping.job import DONE, EVALUATED_EPOCHS, job_spend
from agenttrain.sweeping.ledger import Spend, SweepLedger, SweepLimits
from agenttrain.sweeping.plan import SweepJob, plan_sweep
from agenttrain.sweeping.results import ResultRow, job_rows, write_results
from agenttrain.sweeping.runners import JobOutcome, JobRunner, LocalJobs
from agenttrain.tracking import sweep_parent
from agenttrain.training.estimate import dry_run, estimate_eval, split_questions

__all__ = ["JOB_RUNNERS", "SweepLimits", "SweepOutcome", "dry_run_sweep", "plan_sweep", "run_sweep"]


def ray_jobs() -> JobRunner:
    """Each job as a Ray task; Ray is imported only when a sweep asks for it."""
    from agenttrain.sweeping.ray_jobs import RayJobs

    return RayJobs()


JOB_RUNNERS: dict[str, Callable[[], JobRunner]] = {"local": LocalJobs, "ray": ray_jobs}  # sweep --executor NAME


def job_runner(name: str) -> JobRunner:
    if name not in JOB_RUNNERS:
        raise UserError(f"--executor {name!r}: unknown; choose one of {', '.join(JOB_RUNNERS)}")
    return JOB_RUNNERS[name]()


@dataclass
class SweepOutcome:
    rows: list[ResultRow]
    files: list[Path]
    ran: list[str]  # ids of the jobs started by this invocation (the others were already complete)
    failed: list[JobOutcome]


def _complete(job: SweepJob) -> bool:
    return all(row.status in DONE and row.difference is not None for row in job_rows(job))


def run_sweep(
    configs: list[Path],
    out: Path,
    seeds: list[int] | None = None,
    overrides: list[str] | None = None,
    parallel: int = 1,
    executor: str = "local",
    use_cache: bool = True,
    on_done: Callable[[JobOutcome], None] | None = None,
    limits: SweepLimits | None = None,
) -> SweepOutcome:
    """Plan every config x seed, run the jobs that are not complete (`parallel` at a time on `executor`, within
    `limits` together), then write OUT/results.md, .csv and .json from the run directories."""
    jobs = plan_sweep(configs, out, seeds, overrides or [], use_cache)
    backend = job_runner(executor)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "sweep.json", {"jobs": [job.to_dict() for job in jobs]})
    pending = [job for job in jobs if not _complete(job)]
    ledger = SweepLedger(limits or SweepLimits(), parallel, spent(jobs))
    with sweep_parent(jobs[0].experiment() if jobs else None, out.name):  # jobs log to MLflow as its children
        outcomes = backend.run(pending, parallel, out / "logs", on_done or (lambda outcome: None), ledger)
    write_json_atomic(out / "ledger.json", ledger.report())
    errors = {o.job.id: o.error for o in outcomes if not o.ok}
    rows = [row for job in jobs for row in job_rows(job, errors.get(job.id))]
    return SweepOutcome(rows, write_results(rows, out), [job.id for job in pending],
                        [o for o in outcomes if not o.ok])


def spent(jobs: list[SweepJob]) -> Spend:
    """What the sweep's runs have spent so far, in every earlier invocation: its budget counts it."""
    return sum(map(job_spend, jobs), Spend())


def _job_estimate(job: SweepJob, worst_case: bool, training: dict[str, Any]) -> dict[str, Any]:
    experiment = job.experiment(check_files=False)
    tasks = [experiment.task, *(load_experiment(Path(path), check_files=False).task for path in job.transfer)]
    tests = [split_questions(task, "test", job.config).texts for task in tasks]
    estimates = training["worst_case" if worst_case else "typical"]
    evals = [estimate_eval(experiment, test, len(EVALUATED_EPOCHS), worst_case).to_dict() for test in tests if test]
    rows = [*estimates, *evals]
    costs = [row["cost_usd"] for row in rows]
    return {"requests": sum(row["requests"] for row in rows),
            "tokens": sum(row["prompt_tokens"] + row["completion_tokens"] for row in rows),
            "cost_usd": None if None in costs else sum(costs)}


def assumed_data(jobs: list[SweepJob]) -> list[str]:
    """For each data set not pulled yet, what its estimates assume instead (once per task, not per job)."""
    notes = {}
    for job in jobs:
        task = job.experiment(check_files=False).task
        if missing_files(task):
            notes[task.name] = (f"{task.name}: not pulled yet (agenttrain data pull {task.name}); estimated from "
                                f"the configs' sizes and {task.name}'s typical question length")
    return list(notes.values())


def dry_run_sweep(configs: list[Path], seeds: list[int] | None = None, overrides: list[str] | None = None,
                  limits: SweepLimits | None = None, out: Path | None = None) -> dict[str, Any]:
    """Requests, tokens and dollars each job may cost (training, then the test evaluations), typical and worst
    case; their total beside the sweep's `limits` and what the runs in `out` have spent already."""
    jobs = plan_sweep(configs, out or Path("sweep-dry-run"), seeds, overrides or [], check_files=False)
    rows = []
    for job in jobs:
        training = dry_run(Path(job.config), job.overrides)
        typical, worst = _job_estimate(job, False, training), _job_estimate(job, True, training)
        rows.append({"name": job.id, "requests": typical["requests"], "tokens": typical["tokens"],
                     "cost_usd": typical["cost_usd"], "worst_case_requests": worst["requests"],
                     "worst_case_tokens": worst["tokens"], "worst_case_cost_usd": worst["cost_usd"],
                     "data_assumed": bool(training["assumed"])})

    def total(key: str) -> float | None:
        values = [row[key] for row in rows]
        return None if None in values else sum(values)

    done = spent(jobs) if out is not None else Spend()
    return {"jobs": rows, "total": {key: total(key) for key in ("requests", "tokens", "cost_usd", "worst_case_requests",
                                                                "worst_case_tokens", "worst_case_cost_usd")},
            "spent": {"tokens": done.tokens, "cost_usd": done.usd},
            "limits": asdict(limits or SweepLimits()),
            "assumed": assumed_data(jobs),
            "note": "training as `train --dry-run` estimates it, plus epoch 0 and the best epoch on each test split; "
                    "no cache hits assumed; null cost: a model without a known price (set llm.prices); spent: by "
                    "the sweep's runs so far, which its budget (limits) counts too"}
