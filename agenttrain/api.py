"""The library face of the commands: what every `agenttrain` command does, callable from Python as from the CLI.

`agenttrain/__init__.py` re-exports the public names; the CLI only parses arguments and renders results.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from agenttrain.endpoint.cache import cache_clear, cache_stats
from agenttrain.errors import UserError, import_extra
from agenttrain.progress import PlainReporter
from agenttrain.readback.compare import diff_snapshots
from agenttrain.readback.exporting import export_snapshot
from agenttrain.readback.function_report import FunctionReport, function_reports
from agenttrain.readback.listing import list_runs
from agenttrain.readback.reporting import write_report
from agenttrain.registry import all_registrations
from agenttrain.rundir.directory import RunDir, Snapshot, newest_run, resolve_snapshot, write_text_atomic
from agenttrain.rundir.records import EpochMetrics, RunInfo
from agenttrain.scorers import check_scorer, judge_many
from agenttrain.scorers.in_process import UserScorer, register_scorer
from agenttrain.tasks.datasets import pull
from agenttrain.tasks.files import read_jsonl, require_field
from agenttrain.training.evaluating import eval_epochs, eval_run
from agenttrain.training.from_python import Examples, Role, train_examples
from agenttrain.training.launch import TrainOutcome, prepare, resume, split_sizes
from agenttrain.training.launch import train as train_config

# Sweeps start processes and Ray: loaded by the functions that need them.
if TYPE_CHECKING:
    from agenttrain.packaging import ExportedFolder
    from agenttrain.sweeping import SweepOutcome
    from agenttrain.sweeping.runners import JobOutcome
    from agenttrain.training.trainer import Reporter

__all__ = [
    "TrainOutcome",
    "cache_clear",
    "cache_stats",
    "describe_functions",
    "diff",
    "dry_run",
    "dry_run_sweep",
    "eval_epochs",
    "eval_run",
    "export",
    "export_folder",
    "list_runs",
    "plugins",
    "prepare",
    "pull",
    "register_scorer",
    "report",
    "resume",
    "score_file",
    "serve",
    "show",
    "split_sizes",
    "sweep",
    "train",
]

def train(
    config: Path | str | None = None, overrides: list[str] | None = None, use_cache: bool = True,
    reporter: Reporter | None = None, offline: bool = False, *, task: Examples | None = None,
    test: Examples | None = None, agent: Role = None, optimizer: Role = None, scorer: UserScorer | str = "exact",
    llm: Role = None, name: str = "notebook", settings: Mapping[str, Any] | None = None, progress: bool = True,
) -> TrainOutcome:
    """Train a function set from a config file, as `agenttrain train CONFIG` does, or from Python objects:

        agenttrain.train(Path("configs/quickstart.yaml"), ["optimizer.epochs=3"])
        agenttrain.train(task=[{"question": "What is 6 times 7?", "answer": "42"}, ...], agent="gpt-4o-mini",
                         optimizer="gpt-4o", scorer=lambda answer, gold: float(answer) == float(gold))

    In the second form `task` holds the training examples (mappings with `question` and `answer`, their other
    keys passed to a scorer that takes a third argument, or (question, answer) pairs) and `test` the held-out
    ones (default: 20% of `task`); `scorer` is a function `(answer, gold) -> bool` run in this process, or a
    scorer's name; `agent` and `optimizer` a model name or their config keys; `llm` a base URL (`local`: the
    embedded model) or its keys; `settings` any other config sections. Progress goes to stderr unless
    `progress=False` or a `reporter` is given. Either form returns the run: its folder, status, best epoch,
    functions and per-epoch metrics, the same folder `agenttrain train` makes."""
    if task is None:
        if config is None:
            raise UserError("agenttrain.train(): give a config file, or the examples as task=[...]")
        return train_config(Path(config), overrides, use_cache, reporter, offline)
    if config is not None or overrides:
        raise UserError("agenttrain.train(): give a config file or task=[...] examples, not both")
    with _reporting(reporter, progress) as shown:
        return train_examples(task, test, agent=agent, optimizer=optimizer, scorer=scorer, llm=llm, name=name,
                              settings=settings, use_cache=use_cache, reporter=shown, offline=offline)


@contextlib.contextmanager
def _reporting(reporter: Reporter | None, progress: bool) -> Iterator[Reporter | None]:
    """The caller's reporter, else (with `progress`) plain lines on stderr, which a notebook shows as they come."""
    if reporter is not None or not progress:
        yield reporter
        return
    with PlainReporter(Console(stderr=True)) as plain:
        yield plain


def dry_run(config_path: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Calls, tokens and cost a training run may spend: a typical case and a worst case. Nothing is sent."""
    from agenttrain.training.estimate import dry_run as estimate  # the optimizers' prompts load the agents

    return estimate(config_path, overrides)


def score_file(path: Path, scorer: str) -> dict[str, Any]:
    """Score a JSONL file of predictions (`prediction`, `answer`, optional `id`, `choices`, `unit`)."""
    from agenttrain.rundir.records import Summary

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
    summary = Summary.of([v.correct for v in verdicts], [v.strict for v in verdicts])
    return {**summary.fields(), "scorer": scorer, "items": results}


@dataclass(frozen=True)
class RunOverview:
    """What `agenttrain show` prints: the run's status, its best epoch and every epoch's metrics."""

    run: RunDir
    info: RunInfo
    best_epoch: int | None
    epochs: list[EpochMetrics]
    functions: list[FunctionReport]  # those of the best epoch (`agenttrain functions`)

    def to_json(self) -> dict[str, Any]:
        return {"run": str(self.run.path), "status": self.info.status, "best_epoch": self.best_epoch,
                "epochs": [m.to_json() for m in self.epochs], "functions": [f.to_json() for f in self.functions]}


def show(run_path: Path) -> RunOverview:
    run = RunDir.open(run_path)
    best = run.best_if_any()
    return RunOverview(run, run.info(), best, [run.snapshot(e).metrics for e in run.epochs()],
                       [] if best is None else function_reports(run, best))


def describe_functions(run_path: Path, epoch: str = "best") -> tuple[int, list[FunctionReport]]:
    """Per function of an epoch: calls, tasks and how they ended, the epoch it appeared, its revisions, and the
    tasks it fixed or broke against the set the epoch was judged against."""
    run = RunDir.open(run_path)
    number = run.resolve_epoch(epoch)
    return number, function_reports(run, number)


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


def export_folder(run_path: Path, out: Path, epoch: str = "best", fmt: str = "package") -> ExportedFolder:
    """An epoch's functions as a folder pip installs: `mcp` (an MCP server, calls sandboxed by agenttrain) or
    `package` (the functions with regression tests generated from training)."""
    from agenttrain.packaging import export_folder as write

    run = RunDir.open(run_path)
    return write(run, run.snapshot(run.resolve_epoch(epoch)), fmt, out)


def serve(path: Path, epoch: str = "best", transport: str = "stdio", host: str = "127.0.0.1", port: int = 8000,
          token: str | None = None, on_ready: Callable[[str], None] = lambda url: None) -> None:
    """Serve an epoch's functions (or a folder from `export --format mcp`) as MCP tools until stopped; every call
    runs in the sandbox with the run's limits."""
    from agenttrain.serving import TRANSPORTS, load_served
    from agenttrain.serving.access import check_binding

    if transport not in TRANSPORTS:
        raise UserError(f"--transport {transport!r}: choose one of {', '.join(TRANSPORTS)}")
    if transport == "http":
        check_binding(host, token)
    served = load_served(path, epoch)
    import_extra("mcp", "mcp", "agenttrain serve")
    from agenttrain.serving.server import serve as run_server

    run_server(served, transport, host, port, token, on_ready)


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
    max_usd: float | None = None,
    max_tokens: int | None = None,
    concurrency: int | None = None,
) -> SweepOutcome:
    """Train and evaluate every config x seed as independent runs, then write OUT/results.md, .csv and .json.
    A rerun reuses finished runs and evaluations and resumes unfinished runs. The jobs share one request limit per
    endpoint (`concurrency` in flight; default: what they would send apart) and the sweep's budget (`max_usd`,
    `max_tokens`, earlier invocations counted): once it is spent, running jobs stop as `budget_exhausted` and a
    rerun with a larger budget continues them."""
    from agenttrain.sweeping import SweepLimits, run_sweep

    return run_sweep(configs, out, seeds, overrides, parallel, executor, use_cache, on_done,
                     SweepLimits(max_usd, max_tokens, concurrency))


def dry_run_sweep(configs: list[Path], seeds: list[int] | None = None, overrides: list[str] | None = None,
                  max_usd: float | None = None, max_tokens: int | None = None, concurrency: int | None = None,
                  out: Path | None = None) -> dict[str, Any]:
    """Requests and cost each sweep job may spend (training, then its test evaluations), their total beside the
    sweep's limits, and what the runs in `out` have spent already. Nothing is sent."""
    from agenttrain.sweeping import SweepLimits
    from agenttrain.sweeping import dry_run_sweep as estimate_sweep

    return estimate_sweep(configs, seeds, overrides, SweepLimits(max_usd, max_tokens, concurrency), out)
