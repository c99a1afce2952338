"""`agenttrain eval`: a run's snapshots on a split (test, val, train, or another task's), each result written under
RUN/evals/ with its rollouts. A function set already evaluated is reused, not run again."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agenttrain.config import Experiment, load_experiment
from agenttrain.errors import UserError
from agenttrain.rundir.directory import RunDir, read_rollouts, read_run_json, write_json_atomic, write_rollouts
from agenttrain.rundir.naming import EvalName, eval_split
from agenttrain.rundir.records import EvalResult, RolloutRecord
from agenttrain.stats import wilson_interval
from agenttrain.tracking import log_evaluations
from agenttrain.training.launch import check_endpoints, run_experiment
from agenttrain.training.trust import check_trust

if TYPE_CHECKING:
    from agenttrain.functions import FunctionSet
    from agenttrain.tasks.base import Example
    from agenttrain.training.runtime import Runtime
    from agenttrain.training.trainer import Reporter

Evaluated = tuple[EvalResult, list[RolloutRecord]]  # an evaluation's result and its rollout records


async def _eval(
    run: RunDir, experiment: Experiment, epochs: list[int], split: str, use_cache: bool, reporter: Reporter | None,
    saved: dict[int, Evaluated],
) -> list[Evaluated]:
    """Evaluate each epoch's snapshot; a function set already evaluated (in `saved`, or earlier in this call) is
    not run again: its result is reused, at no cost, with `reused_from` naming the epoch that ran it."""
    from agenttrain.training.runtime import open_runtime

    functions = {epoch: run.snapshot(epoch).functions for epoch in epochs}
    known = {result.functions_hash: (result, records) for result, records in saved.values()}
    fresh: dict[str, int] = {}  # hash -> the first epoch of this call that has to run it
    for epoch in epochs:
        fresh.setdefault(functions[epoch].content_hash(), epoch)
    to_run = [epoch for digest, epoch in fresh.items() if digest not in known]
    if to_run:
        async with open_runtime(experiment, run.path, use_cache=use_cache) as runtime:
            examples = runtime.task.splits().get(split)
            if not examples:
                raise UserError(f"the {split} split is empty; set task.{split}_size in the config")
            for epoch in to_run:
                known[functions[epoch].content_hash()] = await _evaluate_snapshot(
                    runtime, run, epoch, split, examples, functions[epoch], reporter)
    results = []
    for epoch in epochs:
        result, records = known[functions[epoch].content_hash()]
        if result.epoch != epoch or epoch not in to_run:
            origin = result.epoch if result.reused_from is None else result.reused_from
            result = result.model_copy(update={"epoch": epoch, "usage": {}, "reused_from": origin})
        results.append((result, records))
    return results


async def _evaluate_snapshot(runtime: Runtime, run: RunDir, epoch: int, split: str, examples: list[Example],
                             functions: FunctionSet, reporter: Reporter | None) -> Evaluated:
    from agenttrain.endpoint.usage import Usage
    from agenttrain.rundir.records import summarise

    before = runtime.meter.by_role()
    records = await _rollouts(runtime, epoch, split, examples, functions, reporter)
    summary = summarise(records)
    usage = {role: (u - before.get(role, Usage())).to_dict() for role, u in runtime.meter.by_role().items()}
    result = EvalResult(run=str(run.path), epoch=epoch, split=split, task=runtime.experiment.task.name,
                        **summary.fields(), ci95=list(wilson_interval(summary.correct, summary.n)), ci_method="wilson",
                        functions_hash=functions.content_hash(), usage=usage)
    return result, records


async def _rollouts(runtime: Runtime, epoch: int, split: str, examples: list[Example], functions: FunctionSet,
                    reporter: Reporter | None) -> list[RolloutRecord]:
    from agenttrain.endpoint.outage import OutageTimer
    from agenttrain.training.rollouts import answered_rollouts

    if reporter:
        reporter.epoch_started(epoch, f"eval {split}", len(examples))

    def on_record(record: RolloutRecord) -> None:
        if reporter and not record.endpoint_failed:  # that one is retried: not done yet
            reporter.rollout_done(record, runtime.meter.total())

    outage = OutageTimer(runtime.experiment.llm.max_outage_s, getattr(reporter, "waiting", None))
    return await answered_rollouts(runtime.executor, examples, functions, outage, on_record)


def eval_run(
    run_path: Path,
    epoch: str = "best",
    split: str = "test",
    use_cache: bool = True,
    reporter: Reporter | None = None,
    task_config: Path | None = None,
    overrides: list[str] | None = None,
    limit: int | None = None,
    offline: bool = False,
    trust_endpoint: bool = False,
) -> dict[str, Any]:
    """Evaluate one snapshot on a split; the result is written under RUN/evals/ and returned with `items`,
    the per-task verdicts (id, correct, extracted).

    `task_config` (transfer, paper Fig. 3): another experiment YAML whose `task` replaces the run's own,
    so functions trained on one domain are measured on another with the same agent and endpoint.
    `limit`: only the split's first N tasks (a smoke run); the file name says so.
    `trust_endpoint`: send requests to the endpoints of a run folder someone else made (`training.trust`).
    """
    run = RunDir.open(run_path)
    return _eval_epochs(run, [run.resolve_epoch(epoch)], split, use_cache, reporter, task_config, overrides,
                        reuse=False, limit=limit, offline=offline, trust_endpoint=trust_endpoint)[0]


def eval_epochs(
    run_path: Path,
    epochs: list[str] | None = None,
    split: str = "test",
    use_cache: bool = True,
    reporter: Reporter | None = None,
    task_config: Path | None = None,
    overrides: list[str] | None = None,
    limit: int | None = None,
    offline: bool = False,
    trust_endpoint: bool = False,
) -> list[dict[str, Any]]:
    """Evaluate several snapshots (`best`, `N` or `epoch-N`; None: every one, the test learning curve). An epoch
    whose function set was evaluated before, by an earlier call or another epoch (unchanged and repeated sets),
    reuses that result instead of running."""
    run = RunDir.open(run_path)
    numbers = run.epochs() if epochs is None else sorted({run.resolve_epoch(e) for e in epochs})
    return _eval_epochs(run, numbers, split, use_cache, reporter, task_config, overrides, reuse=True, limit=limit,
                        offline=offline, trust_endpoint=trust_endpoint)


def _eval_epochs(
    run: RunDir, epochs: list[int], split: str, use_cache: bool, reporter: Reporter | None,
    task_config: Path | None, overrides: list[str] | None, reuse: bool, limit: int | None = None,
    offline: bool = False, trust_endpoint: bool = False,
) -> list[dict[str, Any]]:
    experiment = run_experiment(run, overrides)
    check_trust(run, experiment, trust_endpoint)
    transfer = None
    if task_config is not None:
        other = load_experiment(task_config)
        experiment, transfer = experiment.model_copy(update={"task": other.task}), other.name
    if limit is not None:
        experiment = experiment.model_copy(update={"task": experiment.task.model_copy(update={"limit": limit})})
    named = eval_split(split, transfer, limit)  # a transfer or smoke run never stands in for the split's result
    if not offline:
        check_endpoints(experiment)
    saved = _saved_evaluations(run, named, experiment) if reuse else {}
    evals = run.writable("evals")  # never through a link someone left in the run folder: refused before any work
    results = asyncio.run(_eval(run, experiment, epochs, split, use_cache, reporter, saved))
    for result, records in results:
        if result.epoch in saved and saved[result.epoch][0].functions_hash == result.functions_hash:
            continue  # its own earlier file, with what it cost then
        name = EvalName(named, result.epoch)
        write_json_atomic(name.result(evals), result.to_json())
        write_rollouts(name.rollouts(evals), records)
    log_evaluations(experiment, run, named, [result for result, _ in results])
    return [{**result.to_json(), "items": [{"id": r.id, "correct": r.correct, "extracted": r.extracted}
                                           for r in records]} for result, records in results]


def _saved_evaluations(run: RunDir, named: str, experiment: Experiment) -> dict[int, Evaluated]:
    """Earlier results of this split and task that say which function set they ran, with their records."""
    saved = {}
    version = run.format_version
    for epoch in run.epochs():
        name = EvalName(named, epoch)
        path, records = name.result(run.evals_dir), name.rollouts(run.evals_dir)
        if not path.exists():
            continue
        result = EvalResult.read(read_run_json(path), version, path)
        if result.functions_hash and result.task == experiment.task.name and records.exists():
            saved[epoch] = (result, read_rollouts(records, version))
    return saved


