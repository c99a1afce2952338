"""Every page's address, built in one place so links and routes agree."""

from __future__ import annotations

from agenttrain.readback.history import Evaluation
from agenttrain.rundir.directory import RunDir
from agenttrain.viewer.html import segment

EVAL_SUFFIX = ".rollouts.jsonl"


def run_url(run: RunDir) -> str:
    return f"/runs/{segment(run.path.name)}/"


def epoch_url(run: RunDir, epoch: int) -> str:
    return f"{run_url(run)}epochs/{epoch}"


def eval_name(evaluation: Evaluation) -> str:
    """The evaluation's file stem, e.g. test-epoch-3 or transfer-geometry-test-epoch-3."""
    return evaluation.records_path.name.removesuffix(EVAL_SUFFIX)


def eval_url(run: RunDir, evaluation: Evaluation) -> str:
    return f"{run_url(run)}evals/{segment(eval_name(evaluation))}"


def task_url(rollouts_url: str, task: str) -> str:
    return f"{rollouts_url}/tasks/{segment(task)}"


def candidates_url(run: RunDir) -> str:
    return f"{run_url(run)}candidates"


def diff_url(run: RunDir, a: int, b: int) -> str:
    return f"{run_url(run)}diff?a={a}&b={b}"


def compare_path(run: RunDir, task: str) -> str:
    """The side-by-side page of `task`, before its query (?a=EPOCH&b=EPOCH)."""
    return f"{run_url(run)}compare/{segment(task)}"


def compare_url(run: RunDir, task: str, a: int, b: int) -> str:
    return f"{compare_path(run, task)}?a={a}&b={b}"


def search_url(run: RunDir) -> str:
    """The search page of a run's transcripts, before its query (?q=WORDS)."""
    return f"{run_url(run)}search"
