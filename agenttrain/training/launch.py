"""Starting and continuing a training run: check everything that can be checked first, make or reopen the run
folder, run the trainer under the run's lock, and leave run.json saying how it ended, whatever ended it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from agenttrain.config import (
    RESUMABLE_KEYS,
    ConfigError,
    Experiment,
    LLMConfig,
    check_api_keys,
    extension_of,
    load_experiment,
)
from agenttrain.endpoint.local_model import check_local
from agenttrain.errors import Interrupted, UserError
from agenttrain.functions import FunctionSet
from agenttrain.rundir.directory import RunDir, WriteError
from agenttrain.rundir.records import EpochMetrics
from agenttrain.sandbox import Sandbox
from agenttrain.scorers import warm_judges
from agenttrain.tasks import load_task
from agenttrain.tracking import check_tracking, tracked
from agenttrain.training.executors import check_executor
from agenttrain.training.trust import check_trust

# Training imports openai and the agents: loaded by the functions that need them, so that `--help` starts fast.
if TYPE_CHECKING:
    from agenttrain.training.runtime import Runtime
    from agenttrain.training.trainer import Reporter


@dataclass
class TrainOutcome:
    """A training run: its folder and how it ended, and what it learned, read from the folder."""

    run: RunDir
    status: str

    @property
    def path(self) -> Path:
        return self.run.path

    @property
    def best_epoch(self) -> int | None:
        return self.run.best_if_any()

    @property
    def functions(self) -> FunctionSet:
        """The best epoch's function set (empty when no epoch finished)."""
        best = self.best_epoch
        return FunctionSet() if best is None else self.run.snapshot(best).functions

    @property
    def metrics(self) -> list[EpochMetrics]:
        """Every saved epoch's metrics, epoch 0 first."""
        return [self.run.snapshot(epoch).metrics for epoch in self.run.epochs()]


def prepare(config_path: Path, overrides: list[str] | None = None, offline: bool = False) -> Experiment:
    """Everything that can be checked before a run directory exists: the config, the data and its split,
    the task's need for network access, the API keys, and (unless `offline`) that each endpoint answers."""
    experiment = load_experiment(config_path, overrides)
    check_experiment(experiment, str(config_path), offline)
    return experiment


def check_experiment(experiment: Experiment, source: str, offline: bool = False) -> None:
    """`prepare`'s checks of a config already read (`source` names it in errors)."""
    from agenttrain.training.runtime import check_network

    task = load_task(experiment.task)
    check_network(experiment, task)
    if not task.splits().train:
        raise ConfigError(f"{source}: task.train_size: the training split is empty; nothing to train on")
    check_api_keys(experiment, source)
    check_executor(experiment, source)
    check_tracking(experiment)
    if not offline:
        check_endpoints(experiment)
    check_local([experiment.llm_for("agent"), experiment.llm_for("optimizer")])


@contextlib.contextmanager
def launched_early(experiment: Experiment) -> Iterator[Sandbox]:
    """Start the processes the first rollouts wait for, without waiting for them: the sandbox's template and the
    scorers'. Their imports take the other core while this process imports the rest of itself and checks the
    endpoint. The sandbox is the run's: the runtime closes it with the agent, in the run's event loop; if the
    run never gets that far (a failed check, a locked run), it is closed here."""
    sandbox = Sandbox(experiment.sandbox)
    sandbox.launch()
    if experiment.executor.kind == "local":  # else the Ray workers score
        warm_judges(load_task(experiment.task).scorer, experiment.llm_for("agent").concurrency)
    try:
        yield sandbox
    finally:
        asyncio.run(sandbox.close())  # idempotent: nothing left to do once the runtime closed it


def split_sizes(experiment: Experiment) -> str:
    """The examples each split holds, e.g. `20 train, 80 test examples`, with the default rule if one chose."""
    return load_task(experiment.task).splits().describe()


def check_endpoints(experiment: Experiment) -> None:
    """One preflight request per distinct endpoint (the agent and the optimizer often share one)."""
    from agenttrain.endpoint.client import check_endpoint

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


async def _fit(
    experiment: Experiment, run: RunDir, use_cache: bool, reporter: Reporter | None, sandbox: Sandbox | None
) -> str:
    from agenttrain.gather import run_all
    from agenttrain.training.runtime import open_runtime
    from agenttrain.training.trainer import Trainer

    async with open_runtime(experiment, run.path, use_cache=use_cache, sandbox=sandbox) as runtime:
        runtime.meter.restore(run.spent())  # a resumed run's budget and cost count what it already spent
        trainer = Trainer(runtime, run, reporter)
        try:
            _, status = await run_all([_record_sandbox(runtime, run), trainer.fit()])
            return cast(str, status)
        except asyncio.CancelledError:
            usage = {role: u.to_dict() for role, u in runtime.meter.by_role().items()}
            run.finish("interrupted", reason="stopped by the user; continue with --resume", usage=usage)
            raise


def train(
    config_path: Path, overrides: list[str] | None = None, use_cache: bool = True, reporter: Reporter | None = None,
    offline: bool = False,
) -> TrainOutcome:
    experiment = load_experiment(config_path, overrides)
    with launched_early(experiment) as sandbox:
        check_experiment(experiment, str(config_path), offline)
        return train_experiment(experiment, use_cache, reporter, sandbox)


def train_experiment(experiment: Experiment, use_cache: bool = True, reporter: Reporter | None = None,
                     sandbox: Sandbox | None = None) -> TrainOutcome:
    """Train a checked config (`prepare`, `check_experiment`) in a new run folder; `sandbox`: one launched early."""
    run = RunDir.create(experiment)
    with run.lock(), tracked(experiment, run, reporter) as reporter:
        return TrainOutcome(run, _run_interruptible(_fit(experiment, run, use_cache, reporter, sandbox), run))


def recorded_config_hash(run: RunDir) -> str:
    """The hash of the config the run was trained with. An older run's hash was dropped (records.UPGRADES): then
    that of its config.yaml as it stands."""
    recorded = run.info().config_hash
    return load_experiment(run.path / "config.yaml").content_hash() if recorded is None else recorded


def run_experiment(run: RunDir, overrides: list[str] | None = None, extend: bool = False) -> Experiment:
    """A run's config with `overrides` applied, refused if they touch anything its results depend on.
    `extend` (resuming) also lets optimizer.epochs, optimizer.early_stop and optimizer.budget grow: the run
    continues."""
    config_path = run.path / "config.yaml"
    experiment = load_experiment(config_path, overrides)
    compared = experiment
    if extend:
        compared = extension_of(load_experiment(config_path), experiment, run.info().epochs_done or 0)
    if compared.content_hash() != recorded_config_hash(run):
        changed = f"--set {' '.join(overrides)}" if overrides else f"{config_path} was edited and"
        allowed = RESUMABLE_KEYS + (", optimizer.epochs, optimizer.early_stop and optimizer.budget" if extend else "")
        raise ConfigError(f"{changed} changes what the run's results depend on; only {allowed} may "
                          "change for an existing run. Start a new run for anything else")
    check_api_keys(experiment, str(config_path))
    check_executor(experiment, str(config_path))
    check_tracking(experiment)
    check_local([experiment.llm_for("agent"), experiment.llm_for("optimizer")])
    return experiment


def resume(
    run_path: Path, overrides: list[str] | None = None, use_cache: bool = True, reporter: Reporter | None = None,
    offline: bool = False, trust_endpoint: bool = False,
) -> TrainOutcome:
    """Continue an interrupted run with the config it was started with, or extend a finished one. `overrides`
    may move the endpoint or raise the budget (RESUMABLE_KEYS), add epochs or delay the early stop
    (EXTENSION_KEYS), never change what the results depend on. A run folder someone else made sends requests to
    its endpoints only as `training.trust` allows (`trust_endpoint`: --trust-endpoint, which adopts the run)."""
    run = RunDir.open(run_path)
    experiment = run_experiment(run, overrides, extend=True)
    check_trust(run, experiment, trust_endpoint)
    with launched_early(experiment) as sandbox:
        if not offline:
            check_endpoints(experiment)
        with run.lock(), tracked(experiment, run, reporter) as reporter:
            if overrides or trust_endpoint:
                run.write_config(experiment)
            run.remove_leftovers()
            run.update_info(status="running", config_hash=experiment.content_hash())
            run.log("resume", overrides=overrides or [])
            return TrainOutcome(run, _run_interruptible(_fit(experiment, run, use_cache, reporter, sandbox), run))


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


