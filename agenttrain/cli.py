"""The `agenttrain` command: parses arguments, calls the library, renders results. No training logic here."""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from agenttrain.errors import UserError
from agenttrain.lazy import lazy_import
from agenttrain.names import (
    DATASETS,
    ENV_BASE_URL,
    ENV_MCP_TOKEN,
    ENV_MODEL,
    ENV_OPTIMIZER_MODEL,
    ENV_OUTPUT_DIR,
    FOLDER_FORMATS,
    STRICT_MEANING,
    default_output_dir,
)
from agenttrain.wording import plural

# Loaded on first use: `--help` needs none of them. The api pulls in openai, sympy and numpy; the others, the
# pydantic models of configs and run records.
api = lazy_import("agenttrain.api")
progress = lazy_import("agenttrain.progress")
runs = lazy_import("agenttrain.rundir.directory")

if TYPE_CHECKING:
    from agenttrain.progress import BaseReporter
    from agenttrain.rundir.directory import RunDir
    from agenttrain.sweeping.runners import JobOutcome

ENVIRONMENT_HELP = (
    "Environment defaults (a config's own value wins): "
    f"{ENV_BASE_URL} (llm.base_url; then OPENAI_BASE_URL), {ENV_MODEL} (agent.model), "
    f"{ENV_OPTIMIZER_MODEL} (optimizer.model), {ENV_OUTPUT_DIR} (output_dir, and where commands look for the "
    "newest run; default ./runs)."
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        out.print(f"agenttrain {version('agenttrain')}")
        raise typer.Exit()


app = typer.Typer(
    help="Train an LLM agent's functions (its tools) with AgentOptimizer: train, eval, diff, show, report, export."
    "\n\nExample: agenttrain train configs/quickstart.yaml",
    epilog=ENVIRONMENT_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain help: value hints such as RUN and INTEGER, no <bool> on flags
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    pass


out = Console()  # results only, so that `--json` output can be piped
err = Console(stderr=True, soft_wrap=True)  # progress, logs, errors; a long error stays one line

SET_HELP = "Override a config key (repeatable)"
Overrides = Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE",
                                                     help=f"{SET_HELP}: --set optimizer.epochs=3")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Bypass the response cache (every request is sent).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout, nothing else.")]
Offline = Annotated[bool, typer.Option("--offline", help="Skip the check that each endpoint answers.")]
TrustEndpoint = Annotated[bool, typer.Option("--trust-endpoint", help="Send requests (and your API key) to the "
                                             "endpoints of a run folder you did not make here.")]
Limit = Annotated[int | None, typer.Option(min=1, metavar="INTEGER",
                                           help="Only the first N tasks of each split: a quick smoke run.")]
RunArgument = Annotated[Path | None, typer.Argument(
    metavar="RUN", show_default=False,
    help=f"A run directory; default: the newest run under ${ENV_OUTPUT_DIR} or ./runs")]
RunOption = Annotated[Path | None, typer.Option("--run", metavar="RUN", help="The run, as an option instead")]
Epoch = Annotated[str, typer.Option(metavar="EPOCH", help="best, N or epoch-N")]


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def open_run(positional: Path | None, option: Path | None) -> RunDir:
    """The run a command works on: given as RUN or --run (the same way for every command), else the newest."""
    if positional and option and positional != option:
        raise UserError(f"two runs given ({positional} and --run {option}); give one")
    path = positional or option
    return runs.RunDir.open(path) if path else runs.newest_run(default_output_dir().resolve())


def reporter_for(console: Console) -> BaseReporter:
    """A live display on a terminal; plain lines in CI, pipes and log files."""
    return progress.RichReporter(console) if console.is_terminal else progress.PlainReporter(console)


@app.command(epilog=ENVIRONMENT_HELP)
def train(
    config: Annotated[Path | None, typer.Argument(metavar="CONFIG", show_default=False,
                                                  help="Experiment YAML, e.g. configs/math-algebra.yaml")] = None,
    overrides: Overrides = None,
    model: Annotated[str | None, typer.Option("--model", "-m", metavar="TEXT",
                                              help="The agent's model (agent.model).")] = None,
    optimizer_model: Annotated[str | None, typer.Option(metavar="TEXT", help="The optimizer's model "
                                                        "(optimizer.model).")] = None,
    limit: Limit = None,
    resume: Annotated[Path | None, typer.Option(metavar="RUN", help="Continue an interrupted run, or extend a "
                                                "finished one with --set optimizer.epochs=N.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Estimate calls, tokens and cost; send nothing.")] = False,
    offline: Offline = False,
    trust_endpoint: TrustEndpoint = False,
    no_cache: NoCache = False,
    as_json: AsJson = False,
) -> None:
    """Train a function set; each epoch is saved to runs/<name>-<stamp>/epoch-N/.

    \b
    Example: agenttrain train configs/math-algebra.yaml --set optimizer.epochs=3
    Extend a finished run: agenttrain train --resume runs/math-algebra-20260101-120000 --set optimizer.epochs=12
    """
    if config is not None and resume is None:
        config_path = config
    elif resume is not None and config is None:
        config_path = resume / "config.yaml"
    else:
        raise UserError("give a CONFIG to start a run, or --resume RUN to continue one (not both)")
    shortcuts = {"agent.model": model, "optimizer.model": optimizer_model, "task.limit": limit}
    if resume is not None and any(value is not None for value in shortcuts.values()):
        raise UserError("--model, --optimizer-model and --limit start a new run; a resumed run keeps its own")
    overrides = [*(f"{key}={value}" for key, value in shortcuts.items() if value is not None), *(overrides or [])]
    if dry_run:
        _render_estimate(api.dry_run(config_path, overrides), as_json)
        return
    with reporter_for(err) as reporter:
        if resume is not None:
            outcome = api.resume(resume, overrides, use_cache=not no_cache, reporter=reporter, offline=offline,
                                 trust_endpoint=trust_endpoint)
        else:
            outcome = api.train(config_path, overrides, use_cache=not no_cache, reporter=reporter, offline=offline)
    info, best = outcome.run.info(), outcome.run.best_if_any()
    if as_json:
        print_json({"run": str(outcome.run.path), "status": outcome.status, "best_epoch": best,
                    "reason": info.reason, "usage": info.usage})
        raise typer.Exit(1 if outcome.status == "failed" else 0)
    kept = "no epoch finished" if best is None else f"best epoch {best}"
    out.print(f"run {outcome.run.path}: {outcome.status.replace('_', ' ')} ({info.reason}); {kept}",
              soft_wrap=True)
    if outcome.status == "failed":
        raise typer.Exit(1)
    if best is not None:
        out.print(f"next: agenttrain eval {outcome.run.path}", soft_wrap=True)


def figures_table(title: str, labels: list[str], figures: list[str], rows: list[list[str]]) -> Table:
    """Label columns then right-aligned figure columns. When the terminal is too narrow, a cell folds onto a second
    line rather than lose its end (rich's default would cut `118,272` to `118…`)."""
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    for column in labels:
        table.add_column(column, overflow="fold")
    for column in figures:
        table.add_column(column, justify="right", overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def _render_estimate(estimate: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(estimate)
        return
    reasoning = any(row["reasoning_tokens"] for case in ("typical", "worst_case") for row in estimate[case])
    models = ", ".join(f"{row['role']} {row['model']}" for row in estimate["typical"])
    title = (f"estimate: {plural(estimate['train_tasks'], 'training task')}, {plural(estimate['epochs'], 'epoch')}; "
             f"{models}")
    cells = []
    for case in ("typical", "worst_case"):
        for i, row in enumerate(estimate[case]):
            tokens = [row["prompt_tokens"], row["completion_tokens"], *([row["reasoning_tokens"]] if reasoning else [])]
            cost = "unknown" if row["cost_usd"] is None else f"{row['cost_usd']:.2f}"
            cells.append(["" if i else case.replace("_", " "), row["role"], f"{row['requests']:,}",
                          *(f"{n:,}" for n in tokens), cost])
    figures = ["requests", "prompt tokens", "completion tokens", *(["reasoning tokens"] if reasoning else []), "$"]
    out.print(figures_table(title, ["case", "role"], figures, cells))
    if budget := estimate.get("budget"):
        out.print(f"optimizer.budget affords about {budget['proposals']} proposals (limited by {budget['limited_by']})")
        if budget["warning"]:
            out.print(f"[yellow]warning:[/] {budget['warning']}", highlight=False)
    out.print(estimate["note"])
    for assumed in estimate["assumed"]:
        out.print(f"without the data: {assumed}", soft_wrap=True, highlight=False)


@app.command(epilog=ENVIRONMENT_HELP)
def validate(
    config: Annotated[Path, typer.Argument(metavar="CONFIG", help="Experiment YAML")],
    overrides: Overrides = None,
    offline: Offline = False,
    as_json: AsJson = False,
) -> None:
    """Check a config (keys, types, data files and split, API key, that each endpoint answers); nothing runs.

    \b
    Example: agenttrain validate configs/math-algebra.yaml --offline
    """
    try:
        experiment = api.prepare(config, overrides, offline)
    except UserError as exc:
        if not as_json:
            raise
        print_json({"config": str(config), "ok": False, "errors": getattr(exc, "errors", [str(exc)])})
        raise typer.Exit(2) from None
    sizes = api.split_sizes(experiment)
    if as_json:
        print_json({"config": str(config), "ok": True, "splits": sizes, "resolved": experiment.model_dump(mode="json")})
        return
    out.print(f"{config}: ok ({experiment.task.name} task: {sizes}; {experiment.agent.type} agent on "
              f"{experiment.agent.model}, optimizer {experiment.optimizer.model}, "
              f"{plural(experiment.optimizer.epochs, 'epoch')})", soft_wrap=True)


@app.command("eval")
def eval_command(
    run: RunArgument = None,
    run_option: RunOption = None,
    epoch: Annotated[str, typer.Option(metavar="EPOCH", help="best, N, epoch-N, or all (every snapshot: the test "
                                       "learning curve)")] = "best",
    split: Annotated[str, typer.Option(metavar="SPLIT", help="test, train or val")] = "test",
    task: Annotated[Path | None, typer.Option(metavar="CONFIG",
                                              help="Transfer: evaluate on another config's task instead")] = None,
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", metavar="KEY=VALUE",
        help=f"{SET_HELP}; only where and how to reach the endpoint: --set llm.base_url=http://localhost:8000/v1 "
        "or --set llm.concurrency=4")] = None,
    limit: Limit = None,
    offline: Offline = False,
    trust_endpoint: TrustEndpoint = False,
    no_cache: NoCache = False,
    as_json: AsJson = False,
) -> None:
    """Evaluate a snapshot on a split; results go to RUN/evals/. The math scorer also prints a strict accuracy:
    Hendrycks' is_equiv string match alone, the figure MATH papers report (accuracy also counts answers
    math-verify proves equal, such as 3.0 for 3).

    \b
    Example: agenttrain eval runs/math-algebra-20260101-120000 --epoch best --split test
    Learning curve: agenttrain eval runs/math-algebra-20260101-120000 --epoch all (then agenttrain report)
    Transfer: agenttrain eval runs/math-algebra-20260101-120000 --task configs/math-geometry.yaml
    """
    run_path = open_run(run, run_option).path
    options = {"use_cache": not no_cache, "task_config": task, "overrides": overrides, "limit": limit,
               "offline": offline, "trust_endpoint": trust_endpoint}
    with reporter_for(err) as reporter:
        if epoch == "all":
            results = api.eval_epochs(run_path, None, split, reporter=reporter, **options)
        else:
            results = [api.eval_run(run_path, epoch, split, reporter=reporter, **options)]
    if as_json:
        print_json(results[0] if epoch != "all" else {"run": str(run_path), "split": split, "evaluations": results})
        return
    smoke = f"; only the first {plural(limit, 'task')} (--limit)" if limit is not None else ""
    for result in results:
        out.print(_eval_line(result) + smoke, soft_wrap=True)
    if any(result.get("accuracy_strict") is not None for result in results):
        out.print(STRICT_MEANING, soft_wrap=True, style="dim", highlight=False)


def _eval_line(result: dict[str, Any]) -> str:
    low, high = result["ci95"]
    line = (f"epoch {result['epoch']} on {result['split']}: accuracy {result['accuracy']:.3f} "
            f"({result['correct']}/{result['n']}), 95% CI {low:.3f}-{high:.3f} (Wilson score)")
    if result.get("accuracy_strict") is not None:
        line += f", strict {result['accuracy_strict']:.3f}"
    if result.get("reused_from") is not None:
        line += f" (same functions as epoch {result['reused_from']}: not run again)"
    return line


def _parse_seeds(seeds: str | None) -> list[int] | None:
    if seeds is None:
        return None
    try:
        parsed = [int(part) for part in seeds.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--seeds {seeds!r}: give whole numbers separated by commas, e.g. --seeds 0,1,2") from None
    if not parsed:
        raise UserError("--seeds: give at least one seed, e.g. --seeds 0")
    return parsed


@app.command()
def sweep(
    configs: Annotated[list[Path], typer.Argument(metavar="CONFIG...",
                                                  help="Experiment YAMLs and/or sweep files (configs/paper/*.yaml)")],
    out_dir: Annotated[Path, typer.Option("--out", metavar="DIR",
                                          help="Folder for the runs, logs and results.md/.csv/.json")],
    overrides: Overrides = None,
    jobs: Annotated[int, typer.Option("--jobs", min=1, metavar="INTEGER", help="Runs trained at the same time")] = 1,
    seeds: Annotated[str | None, typer.Option(metavar="TEXT", help="Comma-separated task.seed values (the train/test "
                                              "split), e.g. 0,1,2; default: each config's own")] = None,
    executor: Annotated[str, typer.Option(metavar="TEXT", help="Where jobs run: local (child processes) or ray (Ray "
                                                              "tasks; RAY_ADDRESS picks the cluster)")] = "local",
    max_usd: Annotated[float | None, typer.Option("--max-usd", metavar="DOLLARS", help="The sweep's budget, all "
                                                  "its runs and reruns together; reached, runs stop resumable")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", metavar="INTEGER", help="The same, in "
                                                   "tokens")] = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", metavar="INTEGER", help="Requests in flight "
                                                    "per endpoint, all jobs together; default: --jobs x each run's "
                                                    "llm.concurrency")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Estimate requests and cost; send nothing.")] = False,
    no_cache: NoCache = False,
    as_json: AsJson = False,
) -> None:
    """Train and evaluate every config x seed as independent runs, then write DIR/results.md, .csv and .json:
    test accuracy before (epoch 0) and after (best epoch), the difference with a paired test, CIs, cost.
    Rerunning the same command reuses finished runs and resumes unfinished ones (with a larger --max-usd, those
    the budget stopped).

    Example: agenttrain sweep configs/paper/ablation.yaml --out results/ablation --jobs 4 --seeds 0,1,2 --max-usd 40
    """
    seed_list = _parse_seeds(seeds)
    if dry_run:
        estimate = api.dry_run_sweep(configs, seed_list, overrides, max_usd, max_tokens, concurrency, out_dir)
        _render_sweep_estimate(estimate, as_json)
        return

    from agenttrain.sweeping.watch import SweepWatch  # loaded here: a sweep's progress only

    watch = SweepWatch(out_dir)

    def job_done(outcome: JobOutcome) -> None:
        watch.ended(outcome)
        verdict = "done" if outcome.ok else f"[red]failed[/]: {outcome.error} (log: {outcome.log})"
        err.print(f"{outcome.job.id}: {verdict}", highlight=False)

    with progress.StatusLine(err, lambda: watch.status().line()):
        result = api.sweep(configs, out_dir, seed_list, overrides, jobs, executor, not no_cache, job_done, max_usd,
                           max_tokens, concurrency)
    if as_json:
        print_json({"results": [str(p) for p in result.files], "ran": result.ran,
                    "failed": [o.job.id for o in result.failed], "rows": [r.to_dict() for r in result.rows]})
    else:
        total = len({r.name for r in result.rows})
        out.print(f"{len(result.ran)} of {total} runs trained or evaluated now ({total - len(result.ran)} were "
                  f"complete), {len(result.failed)} failed; results in {result.files[0]}", highlight=False)
    if result.failed:
        raise typer.Exit(1)


def _render_sweep_estimate(estimate: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(estimate)
        return

    def dollars(value: float | None) -> str:
        return "unknown" if value is None else f"{value:,.2f}"

    jobs = [*estimate["jobs"], {"name": "total", **estimate["total"]}]
    rows = [[row["name"], f"{row['requests']:,}", dollars(row["cost_usd"]), f"{row['worst_case_requests']:,}",
             dollars(row["worst_case_cost_usd"])] for row in jobs]
    out.print(figures_table(f"estimate: {len(estimate['jobs'])} runs", ["run"],
                            ["requests", "$", "worst-case\nrequests", "worst-case\n$"], rows))
    for assumed in estimate["assumed"]:
        out.print(f"without the data: {assumed}", soft_wrap=True, highlight=False)
    total, spent, limits = estimate["total"], estimate["spent"], estimate["limits"]
    if limits["max_usd"] is not None:
        out.print(f"sweep limit ${limits['max_usd']:.2f}: estimated total ${dollars(total['cost_usd'])} (worst case "
                  f"${dollars(total['worst_case_cost_usd'])}), ${spent['cost_usd']:.2f} spent so far", highlight=False,
                  soft_wrap=True)
    if limits["max_tokens"] is not None:
        out.print(f"sweep limit {limits['max_tokens']:,} tokens: estimated total {total['tokens']:,} (worst case "
                  f"{total['worst_case_tokens']:,}), {spent['tokens']:,} spent so far", highlight=False,
                  soft_wrap=True)
    out.print(estimate["note"])


def _render_diff(result: dict[str, Any]) -> None:
    a, b = result["a"], result["b"]
    out.print(f"[bold]epoch {a['epoch']} -> epoch {b['epoch']}[/]  train accuracy "
              f"{a['train_accuracy']:.3f} -> {b['train_accuracy']:.3f}")
    for function in result["added"]:
        out.print(f"[green]+ added {function['name']}[/]: {function['description']}")
        out.print(Syntax(function["code"], "python", line_numbers=False, word_wrap=True))
    for name in result["removed"]:
        out.print(f"[red]- removed {name}[/]")
    for revised in result["revised"]:
        out.print(f"[yellow]~ revised {revised['name']}[/]")
        out.print(Syntax(revised["diff"], "diff", word_wrap=True))
    if not (result["added"] or result["removed"] or result["revised"]):
        out.print("functions: no change")
    for label, paired in (("training tasks", result), ("validation tasks", result["validation"])):
        if paired is not None:
            out.print(f"{label}: {paired['fixed']} fixed, {paired['broken']} broken "
                      f"(exact McNemar p = {paired['mcnemar_p']:.3g})")
            for flip in paired["flips"]:
                out.print(f"  {flip['id']}: {'wrong -> right' if flip['after'] else 'right -> wrong'}")
    attribution = result["attribution"]
    if attribution["described"]:
        split = "validation" if attribution["split"] == "val" else "training"
        out.print(f"what epoch {b['epoch']}'s functions did on the {split} tasks:")
        for line in attribution["described"]:
            out.print(f"  {escape(line)}")


@app.command()
def diff(
    a: Annotated[str, typer.Argument(metavar="A", help="epoch-N or best (in the run), or an epoch folder")],
    b: Annotated[str, typer.Argument(metavar="B", help="epoch-N or best (in the run), or an epoch folder")],
    run: RunArgument = None,
    run_option: RunOption = None,
    output_dir: Annotated[Path | None, typer.Option(metavar="DIR", help="Where to look for the newest run; "
                                                    f"default ${ENV_OUTPUT_DIR} or ./runs")] = None,
    as_json: AsJson = False,
) -> None:
    """What the optimizer changed between two snapshots, and which training tasks flipped.

    \b
    Example: agenttrain diff epoch-3 epoch-5 runs/math-algebra-20260101-120000
    """
    if run and run_option and run != run_option:
        raise UserError(f"two runs given ({run} and --run {run_option}); give one")
    result = api.diff(a, b, run or run_option, (output_dir or default_output_dir()).resolve())
    if as_json:
        print_json(result)
    else:
        _render_diff(result)


@app.command()
def show(run: RunArgument = None, run_option: RunOption = None, as_json: AsJson = False) -> None:
    """One row per epoch: accuracy, accepted or rolled back, actions, functions, tokens.

    \b
    Example: agenttrain show runs/math-algebra-20260101-120000
    """
    from agenttrain.readback.history import optimizer_note, outcome_label, usage_cost, usage_sum, usage_tokens

    overview = api.show(open_run(run, run_option).path)
    if as_json:
        print_json(overview.to_json())
        return
    if not overview.epochs:
        out.print(f"{overview.run.path.name} ({overview.info.status}): no epoch finished; {overview.info.reason or ''}",
                  soft_wrap=True)
        return
    table = Table(title=f"{overview.run.path.name}  ({overview.info.status})")
    reasoning = any(usage_sum(m.usage, "reasoning_tokens") for m in overview.epochs)  # only for reasoning models
    columns = ["epoch", "train acc", "status", "actions", "functions", "tokens", "cost $"]
    for column in columns + (["reasoning tok", "reasoning $"] if reasoning else []):
        table.add_column(column, justify="right" if column != "status" else "left", overflow="fold")
    for m in overview.epochs:
        marker = " *" if m.epoch == overview.best_epoch else ""
        cells = [f"{m.epoch}{marker}", f"{m.train_accuracy:.3f}", outcome_label(m.status), str(m.applied_actions),
                 str(m.function_count), str(usage_tokens(m.usage)), f"{usage_cost(m.usage):.4f}"]
        if reasoning:
            cells += [str(usage_sum(m.usage, "reasoning_tokens")), f"{usage_sum(m.usage, 'reasoning_cost_usd'):.4f}"]
        table.add_row(*cells)
    out.print(table)
    out.print("* best epoch" + ("; tokens and cost include the reasoning" if reasoning else ""))
    for m in overview.epochs:
        if (note := optimizer_note(m)) is not None:
            out.print(f"epoch {m.epoch} optimizer: {note}", soft_wrap=True, highlight=False, markup=False)


@app.command()
def score(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="JSONL: `prediction` and `answer` per line "
                                         "(plus id, choices, unit)")],
    scorer: Annotated[str, typer.Option(metavar="SCORER", help="math, tabmwp, gaia, numeric, exact, or a plugin's")],
    as_json: AsJson = False,
) -> None:
    """Score model outputs with a task's answer extraction and official scorer.

    \b
    Example: agenttrain score predictions.jsonl --scorer math --json
    """
    if not file.is_file():
        raise UserError(f"{file}: {'is a folder, not a JSONL file' if file.is_dir() else 'file not found'}")
    result = api.score_file(file, scorer)
    if as_json:
        print_json(result)
        return
    line = f"{scorer}: accuracy {result['accuracy']:.4f} ({result['correct']}/{result['n']})"
    if result.get("accuracy_strict") is not None:
        line += f", strict {result['accuracy_strict']:.4f}"
    out.print(line)
    if result.get("accuracy_strict") is not None:
        out.print(STRICT_MEANING, soft_wrap=True, style="dim", highlight=False)


cache_app = typer.Typer(help="The on-disk response cache: stats and clear.\n\nExample: agenttrain cache stats",
                        no_args_is_help=True, rich_markup_mode=None)
app.add_typer(cache_app, name="cache")
CacheDir = Annotated[Path | None, typer.Option("--dir", metavar="DIR",
                                               help="Cache folder; default: the per-user cache folder")]


@cache_app.command("stats")
def cache_stats_command(directory: CacheDir = None, as_json: AsJson = False) -> None:
    """Where the cache is, how many replies it holds, and its size.

    \b
    Example: agenttrain cache stats
    """
    stats = api.cache_stats(directory)
    if as_json:
        print_json(stats)
        return
    out.print(f"{stats['path']}: {stats['entries']} replies, {stats['bytes'] / 1e6:.1f} MB")


@cache_app.command("clear")
def cache_clear_command(directory: CacheDir = None, as_json: AsJson = False) -> None:
    """Delete every cached reply (the next runs pay for their requests again).

    \b
    Example: agenttrain cache clear
    """
    deleted = api.cache_clear(directory)
    if as_json:
        print_json({"deleted": deleted})
        return
    out.print(f"deleted {deleted} cached replies")


@app.command("report")
def report_command(
    run: RunArgument = None,
    run_option: RunOption = None,
    out_dir: Annotated[Path | None, typer.Option("--out", metavar="DIR",
                                                 help="Folder for report.md and plots; default RUN/report")] = None,
    as_json: AsJson = False,
) -> None:
    """Write report.md with plots: learning curve, function lineage and usage, complexity, cost, tasks never solved.

    \b
    Example: agenttrain report runs/math-algebra-20260101-120000 --out math-report/
    """
    paths = api.report(open_run(run, run_option).path, out_dir)
    if as_json:
        print_json({"report": str(paths[0]), "plots": [str(p) for p in paths[1:]]})
        return
    out.print(f"wrote {paths[0]} and {len(paths) - 1} plots beside it")


@app.command("export")
def export_command(
    run: RunArgument = None,
    run_option: RunOption = None,
    epoch: Epoch = "best",
    fmt: Annotated[str, typer.Option("--format", metavar="FORMAT",
                                     help="python (an importable module), openai-tools (the `tools` list), json "
                                     "(functions.json), or a folder pip installs: mcp (an MCP server) or package "
                                     "(a package with regression tests from training)")] = "python",
    out_path: Annotated[Path | None, typer.Option("--out", metavar="FILE|DIR",
                                                  help="File to write (a new folder for mcp and package); "
                                                  "default: print to stdout")] = None,
    as_json: AsJson = False,
) -> None:
    """Export an epoch's learned functions for use outside agenttrain.

    \b
    Example: agenttrain export runs/math-algebra-20260101-120000 --epoch best --format python --out functions.py
    An MCP server: agenttrain export runs/math-algebra-20260101-120000 --format mcp --out math-tools/
    """
    if fmt in FOLDER_FORMATS:
        _export_folder(open_run(run, run_option).path, epoch, fmt, out_path, as_json)
        return
    if as_json and out_path is None:
        raise UserError("--json describes the file written with --out; without --out the export itself is printed")
    snapshot, text = api.export(open_run(run, run_option).path, epoch, fmt, out_path)
    if out_path is None:
        sys.stdout.write(text)
        return
    if as_json:
        print_json({"path": str(out_path), "run": str(snapshot.path.parent), "epoch": snapshot.epoch, "format": fmt,
                    "functions": snapshot.functions.names})
        return
    out.print(f"wrote {plural(len(snapshot.functions), 'function')} of epoch {snapshot.epoch} to {out_path}")


def _export_folder(run_path: Path, epoch: str, fmt: str, out_path: Path | None, as_json: bool) -> None:
    if out_path is None:
        raise UserError(f"--format {fmt} writes a folder: give it with --out DIR")
    folder = api.export_folder(run_path, out_path, epoch, fmt)
    if as_json:
        print_json({"path": str(folder.path), "run": str(folder.snapshot.path.parent), "epoch": folder.snapshot.epoch,
                    "format": fmt, "distribution": folder.dist, "module": folder.module, "script": folder.script,
                    "functions": folder.snapshot.functions.names, "cases": folder.cases, "notes": folder.notes})
        return
    count = plural(len(folder.snapshot.functions), "function")
    lines = [f"wrote {folder.path}: {count} of epoch {folder.snapshot.epoch} as {folder.dist}"]
    if folder.cases is not None:
        lines += [" ".join([f"{plural(folder.cases, 'regression case')}.", *folder.notes]),
                  f"next: cd {folder.path} && pip install '.[test]' && pytest"]
    else:
        lines.append(f"next: pip install {folder.path}, then start {folder.script} (see {folder.path / 'README.md'})")
    for line in lines:
        out.print(line, markup=False, highlight=False, soft_wrap=True)


@app.command("functions")
def functions_command(run: RunArgument = None, run_option: RunOption = None, epoch: Epoch = "best",
                      as_json: AsJson = False) -> None:
    """Per function of an epoch: calls, tasks where it was called and how they ended, the epoch it appeared, its
    revisions, and the tasks it fixed or broke against the set the epoch was judged against.

    \b
    Example: agenttrain functions runs/math-algebra-20260101-120000 --epoch best
    """
    run_path = open_run(run, run_option).path
    number, reports = api.describe_functions(run_path, epoch)
    if as_json:
        print_json({"run": str(run_path), "epoch": number, "functions": [r.to_json() for r in reports]})
        return
    if not reports:
        out.print(f"epoch {number} has no functions: the agent works unaided")
        return
    table = Table(title=f"{run_path.name}  epoch {number}", caption="tasks: where it was called, right: of those, "
                  "added and revised: in epoch, fixed and broken: against the set the epoch was judged against")
    table.add_column("function", no_wrap=True)
    for column in ("calls", "failed", "tasks", "right", "added"):
        table.add_column(column, justify="right", no_wrap=True)
    for column in ("revised", "fixed", "broken"):
        table.add_column(column, overflow="fold")
    for r in reports:
        e = r.effect
        table.add_row(e.name, str(e.calls), str(e.failed_calls), str(len(e.tasks)), str(e.right), str(r.appeared),
                      ", ".join(str(v.epoch) for v in r.revisions[1:]) or "–", ", ".join(e.fixed) or "–",
                      ", ".join(e.broken) or "–")
    out.print(table)


@app.command("serve")
def serve_command(
    path: Annotated[Path | None, typer.Argument(metavar="RUN", show_default=False, help="A run, or a folder from "
                                                "export --format mcp; default: the newest run")] = None,
    epoch: Epoch = "best",
    transport: Annotated[str, typer.Option(metavar="TRANSPORT", help="stdio (the client starts this command) or "
                                           "http (streamable HTTP at /mcp)")] = "stdio",
    host: Annotated[str, typer.Option(metavar="ADDRESS", help="http: the address to listen on; anything but "
                                      "loopback needs a token")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="INTEGER", help="http: the port; 0 picks a free one")] = 8000,
    token: Annotated[str | None, typer.Option(metavar="TEXT", envvar=ENV_MCP_TOKEN, show_envvar=False,
                                              help=f"http: the bearer token clients must send (or ${ENV_MCP_TOKEN}, "
                                              "which keeps it out of the process list)")] = None,
) -> None:
    """Serve an epoch's functions as MCP tools; each call runs in the sandbox with the run's limits.

    \b
    Example: agenttrain serve runs/math-algebra-20260101-120000 --epoch best
    Over HTTP: agenttrain serve runs/math-algebra-20260101-120000 --transport http --port 8000
    """
    source = path or open_run(None, None).path

    def ready(url: str) -> None:
        err.print(f"agenttrain serve: {url} (Ctrl-C to stop)", highlight=False)

    api.serve(source, epoch, transport, host, port, token, ready)


@app.command("runs")
def runs_command(
    directory: Annotated[Path | None, typer.Argument(
        metavar="DIR", show_default=False,
        help=f"The folder that holds run directories; default ${ENV_OUTPUT_DIR} or ./runs")] = None,
    as_json: AsJson = False,
) -> None:
    """List runs, oldest first: status, epochs run after the baseline (epoch 0), best train accuracy, evaluated test
    accuracy, cost.

    \b
    Example: agenttrain runs runs/ --json
    """
    directory = directory or default_output_dir()
    summaries = api.list_runs(directory)
    if as_json:
        print_json({"directory": str(directory), "runs": [s.to_dict() for s in summaries]})
        return
    if not summaries:
        out.print(f"no runs under {directory}; start one with: agenttrain train CONFIG")
        return
    table = Table(title=f"runs under {directory}")
    table.add_column("run", overflow="fold")  # long names fold first; on a narrow terminal the figures fold too
    table.add_column("status", overflow="fold")
    for column in ("epochs", "best train", "test", "cost $"):
        table.add_column(column, justify="right", overflow="fold")
    for s in summaries:
        best = "–" if s.best_epoch is None else f"{s.best_train_accuracy:.3f} @{s.best_epoch}"
        test = "–" if s.test_accuracy is None else f"{s.test_accuracy:.3f}"
        if s.test_accuracy is not None and s.test_epoch != s.best_epoch:
            test += f" @{s.test_epoch}"  # only a non-best epoch was evaluated on test
        epochs = "–" if s.last_epoch is None else str(s.last_epoch)  # as "ran N epochs" counts: not the baseline
        table.add_row(Path(s.run).name, s.status or "?", epochs, best, test, f"{s.cost_usd:.4f}")
    out.print(table)
    for s in summaries:
        if s.error:
            out.print(f"{Path(s.run).name}: {s.error}", highlight=False)


@app.command("view")
def view_command(
    path: Annotated[Path, typer.Argument(help="A run directory, or the folder that holds runs",
                                         metavar="RUN|RUNS_DIR")] = Path("runs"),
    port: Annotated[int, typer.Option(metavar="INTEGER", help="Port to listen on; 0 picks a free one")] = 8765,
    host: Annotated[str, typer.Option(metavar="TEXT", help="Address to listen on; anything but loopback shows your "
                                      "runs to the network")] = "127.0.0.1",
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Do not open a browser tab.")] = False,
) -> None:
    """Browse runs, epochs, function diffs and every transcript in a local, read-only web page.

    Example: agenttrain view runs/ --port 8765
    """
    from agenttrain.viewer import serve, start  # the web viewer's modules load only for this command

    server = start(path, host, port)
    err.print(f"agenttrain view: serving {server.url}{server.site.start_path()} (Ctrl-C to stop)", highlight=False)
    if server.allowed_hosts is None:
        err.print(f"[yellow]warning:[/] listening on {host}: anyone who can reach this machine can read these runs")
    serve(server, open_browser=not no_browser)


data_app = typer.Typer(help="Fetch the paper's data sets into local folders the configs point at.\n\n"
                       "Example: agenttrain data pull math --dest data/math",
                       no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")


@data_app.command("pull")
def data_pull(
    name: Annotated[str, typer.Argument(metavar="NAME", help=f"One of: {', '.join(DATASETS)}")],
    dest: Annotated[Path | None, typer.Option(metavar="DIR", help="Folder to write; default data/<name>")] = None,
    source: Annotated[str | None, typer.Option(metavar="TEXT", help="A mirror: another hub repo id or base URL")]
    = None,
    as_json: AsJson = False,
) -> None:
    """Download MATH (Hugging Face hub), TabMWP (PromptPG files) or GAIA (gated: needs HF_TOKEN).

    \b
    Example: agenttrain data pull math --dest data/math
    """
    path = api.pull(name, dest or Path("data") / name, source=source)
    if as_json:
        print_json({"dataset": name, "path": str(path)})
        return
    out.print(f"wrote {path}; point task.path at it")


@app.command("plugins")
def plugins_command(as_json: AsJson = False) -> None:
    """List the registered tasks, agents, scorers and plots, and the package each comes from.

    \b
    Example: agenttrain plugins --json
    """
    registered = api.plugins()
    if as_json:
        print_json({"plugins": registered})
        return
    table = Table(title="registered extensions")
    for column in ("kind", "name", "defined in", "from"):
        table.add_column(column, overflow="fold")
    for entry in registered:
        table.add_row(entry["kind"], entry["name"], entry["target"], entry["source"])
    out.print(table)


def main() -> NoReturn:
    """Console entry point: user errors print one clear line, never a traceback."""
    try:
        app()
        code: int | str | None = 0
    except UserError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        code = exc.exit_code
    except KeyboardInterrupt:
        err.print("interrupted")
        code = 130
    except SystemExit as exc:  # how click ends every command
        code = exc.code
    exit_now(code)


def exit_now(code: int | str | None) -> NoReturn:
    """Exit as `sys.exit(code)` does, but without tearing the interpreter down: freeing the modules of openai and
    pydantic one by one took ~0.3 s after the run was recorded. By then a command has closed what it opened (a run
    its sandbox and pools, killing their processes); the exit handlers close the rest (the scorer processes)."""
    if isinstance(code, str):
        err.print(code, highlight=False)
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)

