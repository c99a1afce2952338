"""The library face of the commands: what every `agenttrain` command does, callable from Python as from the CLI.

`agenttrain/__init__.py` re-exports the public names; the CLI only parses arguments and renders results.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from agenttrain.cache import cache_clear, cache_stats
from agenttrain.compare import diff_snapshots
from agenttrain.config import (
    RESUMABLE_KEYS,
    ConfigError,
    Experiment,
    LLMConfig,
    check_api_keys,
    extension_of,
    load_experiment,
)
from agenttrain.datasets import pull
from agenttrain.errors import Interrupted, UserError
from agenttrain.executors import check_executor
from agenttrain.exporting import export_snapshot
from agenttrain.listing import list_runs
from agenttrain.local_model import check_local
from agenttrain.records import EpochMetrics, EvalResult, RunInfo
from agenttrain.registry import all_registrations
from agenttrain.reporting import write_report
from agenttrain.runs import (
    RunDir,
    Snapshot,
    WriteError,
    newest_run,
    read_rollouts,
    read_run_json,
    resolve_snapshot,
    write_json_atomic,
    write_jsonl_atomic,
    write_text_atomic,
)
from agenttrain.scorers import check_scorer, judge_many
from agenttrain.stats import wilson_interval
from agenttrain.tasks import load_task
from agenttrain.tasks.files import read_jsonl, require_field

# Training, evaluation and estimates import openai and the agents: loaded by the functions that need them,
# so that `agenttrain runs`, `show` and `--help` start fast.
if TYPE_CHECKING:
    from agenttrain.functions import FunctionSet
    from agenttrain.runtime import Runtime
    from agenttrain.sweeping import SweepOutcome
    from agenttrain.sweeping.executors import JobOutcome
    from agenttrain.tasks.base import Example
    from agenttrain.trainer import Reporter

__all__ = [
    "cache_clear", "cache_stats", "diff", "dry_run", "dry_run_sweep", "eval_epochs", "eval_run", "export",
    "list_runs", "plugins", "prepare", "pull", "report", "resume", "score_file", "show", "sweep", "train",
]

Evaluated = tuple[EvalResult, list[dict[str, Any]]]  # an evaluation's result and its rollout records


@dataclass
class TrainOutcome:
    run: RunDir
    status: str


def prepare(config_path: Path, overrides: list[str] | None = None, offline: bool = False) -> Experiment:
    """Everything that can be checked before a run directory exists: the config, the data and its split,
    the task's need for network access, the API keys, and (unless `offline`) that each endpoint answers."""
    experiment = load_experiment(config_path, overrides)
    from agenttrain.runtime import check_network

    task = load_task(experiment.task)
    check_network(experiment, task)
    if not task.splits().train:
        raise ConfigError(f"{config_path}: task.train_size: the training split is empty; nothing to train on")
    check_api_keys(experiment, str(config_path))
    check_executor(experiment, str(config_path))
    if not offline:
        check_endpoints(experiment)
    check_local([experiment.llm_for("agent"), experiment.llm_for("optimizer")])
    return experiment


def split_sizes(experiment: Experiment) -> str:
    """The examples each split holds, e.g. `20 train, 80 test examples`, with the default rule if one chose."""
    return load_task(experiment.task).splits().describe()


def check_endpoints(experiment: Experiment) -> None:
    """One preflight request per distinct endpoint (the agent and the optimizer often share one)."""
    from agenttrain.llm import check_endpoint

    endpoints: dict[tuple[str | None, str], tuple[LLMConfig, str]] = {}
    roles: tuple[Literal["agent", "optimizer"], ...] = ("agent", "optimizer")
    for role in roles:
        settings = experiment.llm_for(role)
        if settings.resolved_base_url() == "local":  # the embedded model: started and checked by check_local
            continue
        endpoints.setdefault((settings.resolved_base_url(), settings.api_key_env), (settings, role))

    async def check_all() -> None:
        await asyncio.gather(*(check_endpoint(settings, role) for settings, role in endpoints.values()))

    asyncio.run(check_all())


async def _record_sandbox(runtime: Runtime, run: RunDir) -> None:
    """run.json's sandbox report, once the sandbox has started (in the background, during the model's first
    turns). A sandbox that refuses to start raises here, which ends the run."""
    await runtime.sandbox.start()
    run.update_info(sandbox=runtime.sandbox.describe(),
                    task_requires_network=getattr(runtime.task, "requires_network", False))


async def _fit(experiment: Experiment, run: RunDir, use_cache: bool, reporter: Reporter | None) -> str:
    from agenttrain.evaluation import run_all
    from agenttrain.runtime import open_runtime
    from agenttrain.trainer import Trainer, state_from_run

    async with open_runtime(experiment, run.path, use_cache=use_cache) as runtime:
        runtime.meter.restore(run.spent())  # a resumed run's budget and cost count what it already spent
        trainer = Trainer(runtime, run, reporter)
        try:
            _, status = await run_all([_record_sandbox(runtime, run), trainer.fit(state_from_run(run))])
            return cast(str, status)
        except asyncio.CancelledError:
            usage = {role: u.to_dict() for role, u in runtime.meter.by_role().items()}
            run.finish("interrupted", reason="stopped by the user; continue with --resume", usage=usage)
            raise


def train(
    config_path: Path, overrides: list[str] | None = None, use_cache: bool = True, reporter: Reporter | None = None,
    offline: bool = False,
) -> TrainOutcome:
    experiment = prepare(config_path, overrides, offline)
    run = RunDir.create(experiment)
    with run.lock():
        return TrainOutcome(run, _run_interruptible(_fit(experiment, run, use_cache, reporter), run))


def recorded_config_hash(run: RunDir) -> str:
    """The hash of the config the run was trained with. An older run's hash was dropped (records.UPGRADES): then
    that of its config.yaml as it stands."""
    recorded = run.info().config_hash
    return load_experiment(run.path / "config.yaml").content_hash() if recorded is None else recorded


def run_experiment(run: RunDir, overrides: list[str] | None = None, extend: bool = False) -> Experiment:
    """A run's config with `overrides` applied, refused if they touch anything its results depend on.
    `extend` (resuming) also lets optimizer.epochs and optimizer.early_stop grow: the run continues."""
    config_path = run.path / "config.yaml"
    experiment = load_experiment(config_path, overrides)
    compared = experiment
    if extend:
        compared = extension_of(load_experiment(config_path), experiment, run.info().epochs_done or 0)
    if compared.content_hash() != recorded_config_hash(run):
        changed = f"--set {' '.join(overrides)}" if overrides else f"{config_path} was edited and"
        allowed = RESUMABLE_KEYS + (", optimizer.epochs and optimizer.early_stop" if extend else "")
        raise ConfigError(f"{changed} changes what the run's results depend on; only {allowed} may "
                          "change for an existing run. Start a new run for anything else")
    check_api_keys(experiment, str(config_path))
    check_executor(experiment, str(config_path))
    check_local([experiment.llm_for("agent"), experiment.llm_for("optimizer")])
    return experiment


def resume(
    run_path: Path, overrides: list[str] | None = None, use_cache: bool = True, reporter: Reporter | None = None,
    offline: bool = False,
) -> TrainOutcome:
    """Continue an interrupted run with the config it was started with, or extend a finished one. `overrides`
    may move the endpoint or raise the budget (RESUMABLE_KEYS), add epochs or delay the early stop
    (EXTENSION_KEYS), never change what the results depend on."""
    run = RunDir.open(run_path)
    experiment = run_experiment(run, overrides, extend=True)
    if not offline:
        check_endpoints(experiment)
    with run.lock():
        if overrides:
            write_text_atomic(run.path / "config.yaml", experiment.to_yaml())
        run.remove_leftovers()
        run.update_info(status="running", config_hash=experiment.content_hash())
        run.log("resume", overrides=overrides or [])
        return TrainOutcome(run, _run_interruptible(_fit(experiment, run, use_cache, reporter), run))


def _run_interruptible(coroutine: Any, run: RunDir) -> str:
    """Run the training coroutine; whatever ends it, run.json says how (never left at "running")."""
    try:
        return asyncio.run(coroutine)
    except KeyboardInterrupt:
        run.finish("interrupted", reason="stopped by the user; continue with --resume")
        raise Interrupted(f"interrupted; continue with: agenttrain train --resume {run.path}") from None
    except Exception as exc:
        reason = str(exc) if isinstance(exc, UserError) else f"internal error: {exc!r}"
        with contextlib.suppress(WriteError):  # not even run.json can be written: the error below says what to fix
            run.finish("failed", reason=f"{reason}; continue with --resume once fixed")
        if isinstance(exc, WriteError):
            raise WriteError(f"{exc}; then continue with: agenttrain train --resume {run.path}") from None
        raise


async def _eval(
    run: RunDir, experiment: Experiment, epochs: list[int], split: str, use_cache: bool, reporter: Reporter | None,
    saved: dict[int, Evaluated],
) -> list[Evaluated]:
    """Evaluate each epoch's snapshot; a function set already evaluated (in `saved`, or earlier in this call) is
    not run again: its result is reused, at no cost, with `reused_from` naming the epoch that ran it."""
    from agenttrain.runtime import open_runtime

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
    from agenttrain.evaluation import summarise
    from agenttrain.usage import Usage

    before = runtime.meter.by_role()
    records = await _rollouts(runtime, epoch, split, examples, functions, reporter)
    summary = summarise(records)
    usage = {role: (u - before.get(role, Usage())).to_dict() for role, u in runtime.meter.by_role().items()}
    result = EvalResult(run=str(run.path), epoch=epoch, split=split, task=runtime.experiment.task.name, **summary,
                        ci95=list(wilson_interval(summary["correct"], summary["n"])), ci_method="wilson",
                        functions_hash=functions.content_hash(), usage=usage)
    return result, records


async def _rollouts(runtime: Runtime, epoch: int, split: str, examples: list[Example], functions: FunctionSet,
                    reporter: Reporter | None) -> list[dict[str, Any]]:
    from agenttrain.evaluation import endpoint_failed, evaluate_answered
    from agenttrain.outage import OutageTimer

    if reporter:
        reporter.epoch_started(epoch, f"eval {split}", len(examples))

    def on_record(record: dict[str, Any]) -> None:
        if reporter and not endpoint_failed(record):  # that one is retried: not done yet
            reporter.rollout_done(record, runtime.meter.total())

    outage = OutageTimer(runtime.experiment.llm.max_outage_s, getattr(reporter, "waiting", None))
    return await evaluate_answered(runtime.executor, examples, functions, outage, on_record)


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
) -> dict[str, Any]:
    """Evaluate one snapshot on a split; the result is written under RUN/evals/ and returned with `items`,
    the per-task verdicts (id, correct, extracted).

    `task_config` (transfer, paper Fig. 3): another experiment YAML whose `task` replaces the run's own,
    so functions trained on one domain are measured on another with the same agent and endpoint.
    `limit`: only the split's first N tasks (a smoke run); the file name says so.
    """
    run = RunDir.open(run_path)
    return _eval_epochs(run, [run.resolve_epoch(epoch)], split, use_cache, reporter, task_config, overrides,
                        reuse=False, limit=limit, offline=offline)[0]


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
) -> list[dict[str, Any]]:
    """Evaluate several snapshots (`best`, `N` or `epoch-N`; None: every one, the test learning curve). An epoch
    whose function set was evaluated before, by an earlier call or another epoch (unchanged and repeated sets),
    reuses that result instead of running."""
    run = RunDir.open(run_path)
    numbers = run.epochs() if epochs is None else sorted({run.resolve_epoch(e) for e in epochs})
    return _eval_epochs(run, numbers, split, use_cache, reporter, task_config, overrides, reuse=True, limit=limit,
                        offline=offline)


def _eval_epochs(
    run: RunDir, epochs: list[int], split: str, use_cache: bool, reporter: Reporter | None,
    task_config: Path | None, overrides: list[str] | None, reuse: bool, limit: int | None = None,
    offline: bool = False,
) -> list[dict[str, Any]]:
    experiment = run_experiment(run, overrides)
    prefix = ""
    if task_config is not None:
        other = load_experiment(task_config)
        experiment = experiment.model_copy(update={"task": other.task})
        prefix = f"transfer-{other.name}-"
    if limit is not None:
        experiment = experiment.model_copy(update={"task": experiment.task.model_copy(update={"limit": limit})})
        prefix += f"first{limit}-"  # a smoke run never stands in for the full split's result
    if not offline:
        check_endpoints(experiment)
    saved = _saved_evaluations(run, prefix, split, experiment) if reuse else {}
    results = asyncio.run(_eval(run, experiment, epochs, split, use_cache, reporter, saved))
    for result, records in results:
        if result.epoch in saved and saved[result.epoch][0].functions_hash == result.functions_hash:
            continue  # its own earlier file, with what it cost then
        stem = f"{prefix}{split}-epoch-{result.epoch}"  # names may hold dots: never with_suffix
        write_json_atomic(run.evals_dir / f"{stem}.json", result.to_json())
        write_jsonl_atomic(run.evals_dir / f"{stem}.rollouts.jsonl", records)
    return [{**result.to_json(), "items": [{"id": r["id"], "correct": r["correct"], "extracted": r["extracted"]}
                                           for r in records]} for result, records in results]


def _saved_evaluations(run: RunDir, prefix: str, split: str, experiment: Experiment) -> dict[int, Evaluated]:
    """Earlier results of this split and task that say which function set they ran, with their records."""
    saved = {}
    version = run.format_version
    for epoch in run.epochs():
        path = run.evals_dir / f"{prefix}{split}-epoch-{epoch}.json"
        if not path.exists():
            continue
        result = EvalResult.read(read_run_json(path), version, path)
        records = path.with_name(f"{path.stem}.rollouts.jsonl")
        if result.functions_hash and result.task == experiment.task.name and records.exists():
            saved[epoch] = (result, read_rollouts(records, version))
    return saved


def dry_run(config_path: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Calls, tokens and cost a training run may spend: a typical case and a worst case. Nothing is sent."""
    from agenttrain.estimate import estimate_run

    experiment = load_experiment(config_path, overrides)
    train_split = load_task(experiment.task).splits().train
    questions = [e.question for e in train_split]
    return {
        "train_tasks": len(questions),
        "epochs": experiment.optimizer.epochs,
        "typical": [e.to_dict() for e in estimate_run(experiment, questions, worst_case=False)],
        "worst_case": [e.to_dict() for e in estimate_run(experiment, questions, worst_case=True)],
        "note": "estimates assume no cache hits; completion tokens include a reasoning model's hidden reasoning "
        "(a guess per reply at the role's reasoning_effort); an unknown cost (null in --json) means the model has "
        "no known price (set llm.prices in the config)",
    }


def score_file(path: Path, scorer: str) -> dict[str, Any]:
    """Score a JSONL file of predictions (`prediction`, `answer`, optional `id`, `choices`, `unit`)."""
    from agenttrain.evaluation import summarise

    check_scorer(scorer)
    items = []
    for number, record in read_jsonl(path):
        where = f"{path}:{number}"
        if "prediction" not in record:
            raise UserError(f"{where}: missing field 'prediction'")
        items.append({**record, "answer": str(require_field(record, "answer", where)),
                      "prediction": None if record["prediction"] is None else str(record["prediction"]),
                      "id": str(record.get("id", f"line-{number}"))})
    if not items:
        raise UserError(f"{path}: no predictions to score (the file is empty)")
    verdicts = judge_many(scorer, items)
    results = [
        {"id": item["id"], "extracted": v.extracted, "correct": v.correct,
         **({"strict": v.strict} if v.strict is not None else {}), **({"note": v.note} if v.note else {})}
        for item, v in zip(items, verdicts, strict=True)
    ]
    return {**summarise(results), "scorer": scorer, "items": results}


@dataclass(frozen=True)
class RunOverview:
    """What `agenttrain show` prints: the run's status, its best epoch and every epoch's metrics."""

    run: RunDir
    info: RunInfo
    best_epoch: int | None
    epochs: list[EpochMetrics]

    def to_json(self) -> dict[str, Any]:
        return {"run": str(self.run.path), "status": self.info.status, "best_epoch": self.best_epoch,
                "epochs": [m.to_json() for m in self.epochs]}


def show(run_path: Path) -> RunOverview:
    run = RunDir.open(run_path)
    return RunOverview(run, run.info(), run.best_if_any(), [run.snapshot(e).metrics for e in run.epochs()])


def diff(a: str, b: str, run_path: Path | None = None, output_dir: Path = Path("runs")) -> dict[str, Any]:
    """What changed between two snapshots: `a` and `b` are epoch folders, or `epoch-N` / `best` in the run at
    `run_path` (default: the newest run under `output_dir`)."""
    needs_run = not all(Path(ref).is_dir() for ref in (a, b))
    run = (RunDir.open(run_path) if run_path else newest_run(output_dir)) if needs_run else None
    return diff_snapshots(resolve_snapshot(a, run), resolve_snapshot(b, run))


def report(run_path: Path, out_dir: Path | None = None) -> list[Path]:
    """Write report.md and its plots (default RUN/report/); returns the paths, report.md first."""
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir}: is a file; give a folder for report.md and its plots")
    return write_report(RunDir.open(run_path), out_dir)


def export(run_path: Path, epoch: str = "best", fmt: str = "python", out: Path | None = None
           ) -> tuple[Snapshot, str]:
    """An epoch's functions as text in `fmt`, also written to `out` when given."""
    if out is not None and out.is_dir():
        raise UserError(f"--out {out}: is a folder; give a file name such as {out / 'functions.py'}")
    run = RunDir.open(run_path)
    snapshot = run.snapshot(run.resolve_epoch(epoch))
    text = export_snapshot(snapshot, fmt)
    if out is not None:
        write_text_atomic(out, text)
    return snapshot, text


def plugins() -> list[dict[str, str]]:
    """Every registered task, agent, scorer and plot: its name, where it is defined and which package gave it."""
    return [registration.to_dict() for registration in all_registrations()]


def sweep(
    configs: list[Path],
    out: Path,
    seeds: list[int] | None = None,
    overrides: list[str] | None = None,
    parallel: int = 1,
    executor: str = "local",
    use_cache: bool = True,
    on_done: Callable[[JobOutcome], None] | None = None,
) -> SweepOutcome:
    """Train and evaluate every config x seed as independent runs, then write OUT/results.md, .csv and .json.
    A rerun reuses finished runs and evaluations and resumes unfinished runs."""
    from agenttrain.sweeping import run_sweep  # its jobs call this module: imported on use, not in a cycle

    return run_sweep(configs, out, seeds, overrides, parallel, executor, use_cache, on_done)


def dry_run_sweep(configs: list[Path], seeds: list[int] | None = None, overrides: list[str] | None = None
                  ) -> dict[str, Any]:
    """Requests and cost each sweep job may spend (training, then its test evaluations). Nothing is sent."""
    from agenttrain.sweeping import dry_run_sweep as estimate_sweep

    return estimate_sweep(configs, seeds, overrides)
