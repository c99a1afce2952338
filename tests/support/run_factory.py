"""Run directories without an LLM: the real RunDir API fed with hand-made functions, metrics and rollouts.

`story_run` tells one small training story that the report, export and runs tests read back:

    epoch 0  baseline     no functions                      t1 right                 25%
    epoch 1  accepted     + multiply                        t1 t2 right              50%
    epoch 2  rolled back  ~ multiply (broken), + square     t1 right                 25%
                          (its remove_function is rejected: no function named 'cube')
    epoch 3  accepted     + divide                          t1 t2 t3 right           75%   (best)
                          (its calls carry arguments and results: multiply(6, 7), multiply(2.5, 4), divide(1, 3);
                           divide(1, 0) on t4, which ended wrong; its prompt left 2 of 4 conversations out to fit)
    epoch 4  unchanged    TERMINATE                         (epoch 3's rollouts)     75%
    t4 is wrong in every epoch; test evaluations exist for epochs 0 and 3.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from agenttrain.config import Experiment
from agenttrain.functions import Function, FunctionSet, build_function
from agenttrain.rundir.directory import RunDir, write_json_atomic, write_rollouts
from agenttrain.rundir.records import Best, EpochMetrics, FunctionCallRecord, RolloutRecord

MULTIPLY = build_function(
    "multiply", "Multiply two numbers exactly.",
    {"a": {"type": "number"}, "b": {"type": "number"}}, "",
    "def multiply(a, b):\n    # exact for ints and Fractions alike\n    return a * b\n",
)
MULTIPLY_BROKEN = build_function(
    "multiply", "Multiply two numbers exactly.",
    {"a": {"type": "number"}, "b": {"type": "number"}}, "",
    "def multiply(a, b):\n    return a + b\n",
)
SQUARE = build_function(
    "square", "Square a number.", {"x": {"type": "number"}}, "", "def square(x):\n    return x * x\n"
)
DIVIDE = build_function(
    "divide", "Divide a by b; a message instead of an error when b is zero.",
    {"a": {"type": "number"}, "b": {"type": "number"}}, "fractions",
    "from fractions import Fraction\n\n\ndef divide(a, b):\n    if b == 0:\n        return 'division by zero'\n"
    "    return Fraction(a) / Fraction(b)\n",
)
TASKS = ("t1", "t2", "t3", "t4")


def experiment(tmp_path: Path, name: str = "story") -> Experiment:
    data = tmp_path / "problems.jsonl"
    data.touch()
    return Experiment.model_validate({
        "name": name,
        "task": {"name": "math", "path": str(data)},
        "agent": {"model": "agent-model"},
        "optimizer": {"model": "optimizer-model"},
        "output_dir": str(tmp_path / "runs"),
    })


def usage(agent_tokens: int, optimizer_tokens: int = 0) -> dict[str, dict[str, Any]]:
    """Per-role usage at $1 per thousand tokens, split 3:1 between prompt and completion."""
    def role(tokens: int) -> dict[str, Any]:
        prompt = tokens * 3 // 4
        return {"requests": tokens // 100, "cache_hits": 0, "prompt_tokens": prompt,
                "completion_tokens": tokens - prompt, "cost_usd": tokens / 1000, "total_tokens": tokens}

    return {"agent": role(agent_tokens), "optimizer": role(optimizer_tokens)}


def call(name: str, arguments: dict[str, Any], result: str) -> FunctionCallRecord:
    """An ok call as agents record it now: with its arguments and the text the agent saw."""
    return FunctionCallRecord(name=name, ok=True, arguments=arguments, result=result)


def rollout(task: str, correct: bool, calls: Iterable[tuple[str, bool] | FunctionCallRecord] = ()) -> RolloutRecord:
    """`calls`: (name, ok) as older runs recorded them (no arguments or results), or whole records."""
    return RolloutRecord(
        id=task, question=f"Question of {task}?", gold=f"gold-{task}",
        prediction=f"\\boxed{{answer-{task}}}", extracted=f"answer-{task}", correct=correct,
        strict=correct, stop_reason="answered", turns=2,
        function_calls=[c if isinstance(c, FunctionCallRecord) else
                        FunctionCallRecord(name=c[0], ok=c[1], error=None if c[1] else "NameError") for c in calls],
    )


def action(kind: str, name: str | None, reason: str | None = None, status: str = "applied", error: str | None = None
           ) -> dict[str, Any]:
    return {"action": kind, "name": name, "status": status, "error": error, "attempts": 1, "reason": reason}


def save_epoch(
    run: RunDir,
    epoch: int,
    functions: Sequence[Function],
    status: str,
    records: list[RolloutRecord],
    kept_accuracy: float,
    actions: Sequence[dict[str, Any]] = (),
    spent: dict[str, dict[str, Any]] | None = None,
    best_epoch: int | None = None,
    prompt_cuts: Sequence[str] = (),
) -> None:
    """One epoch folder with the metrics keys the trainer writes; `best_epoch` defaults to this epoch."""
    correct = sum(r.correct for r in records)
    accuracy = correct / len(records)
    metrics = EpochMetrics(
        epoch=epoch, status=status, accepted=status in ("baseline", "accepted"), train_accuracy=accuracy,
        train_correct=correct, train_n=len(records), train_errors=0, incumbent_accuracy=kept_accuracy,
        function_count=len(functions), actions=list(actions), prompt_cuts=list(prompt_cuts), stale=0,
        best_epoch=epoch if best_epoch is None else best_epoch,
        best_accuracy=kept_accuracy, usage=spent or usage(1000), duration_s=1.0,
    )
    run.save_snapshot(FunctionSet(tuple(functions)), metrics, records)


def save_eval(
    run: RunDir, split: str, epoch: int, outcomes: dict[str, bool], cost: float = 0.5, prefix: str = "",
    strict: float | None = None,
) -> None:
    """An eval result in the layout `agenttrain eval` writes under RUN/evals/ (`prefix`: "transfer-<name>-";
    `strict`: the strict accuracy of a scorer that has one)."""
    records = [rollout(task, correct) for task, correct in outcomes.items()]
    correct = sum(outcomes.values())
    stem = run.evals_dir / f"{prefix}{split}-epoch-{epoch}"
    write_json_atomic(stem.with_suffix(".json"), {
        "run": str(run.path), "epoch": epoch, "split": split, "accuracy": correct / len(records),
        "correct": correct, "n": len(records), "errors": 0, "accuracy_strict": strict,
        "usage": {"agent": usage(int(cost * 1000))["agent"]},
    })
    write_rollouts(stem.with_suffix(".rollouts.jsonl"), records)


def story_run(tmp_path: Path, name: str = "story", evaluated: bool = True) -> RunDir:
    run = RunDir.create(experiment(tmp_path, name))
    save_epoch(run, 0, [], "baseline", [rollout("t1", True), rollout("t2", False), rollout("t3", False),
                                        rollout("t4", False)], 0.25, spent=usage(2000))
    save_epoch(run, 1, [MULTIPLY], "accepted", [
        rollout("t1", True, [("multiply", True)]), rollout("t2", True, [("multiply", True), ("multiply", True)]),
        rollout("t3", False, [("multiply", False)]), rollout("t4", False, [("mutliply", False)]),
    ], 0.5, [action("add_function", "multiply", "products recur in these problems")], usage(3000, 1000))
    save_epoch(run, 2, [MULTIPLY_BROKEN, SQUARE], "rolled_back", [
        rollout("t1", True, [("square", True)]), rollout("t2", False, [("multiply", True)]),
        rollout("t3", False), rollout("t4", False),
    ], 0.5, [action("revise_function", "multiply", "simplify"), action("add_function", "square"),
             action("remove_function", "cube", status="rejected", error="no function named 'cube'")],
               usage(3000, 1500), best_epoch=1)
    best_records = [
        rollout("t1", True, [call("multiply", {"a": 6, "b": 7}, "42")]),
        rollout("t2", True, [call("multiply", {"a": 2.5, "b": 4}, "10.0")]),
        rollout("t3", True, [call("divide", {"a": 1, "b": 3}, "1/3")]),
        rollout("t4", False, [call("divide", {"a": 1, "b": 0}, "division by zero")]),
    ]
    save_epoch(run, 3, [MULTIPLY, DIVIDE], "accepted", best_records, 0.75,
               [action("add_function", "divide", "t3 divides | and fails without it")], usage(3000, 1000),
               prompt_cuts=["2 of 4 conversations left out"])
    save_epoch(run, 4, [MULTIPLY, DIVIDE], "unchanged", best_records, 0.75,
               [action("terminate", None, status="terminate")], usage(0, 500), best_epoch=3)
    run.set_best(Best(epoch=3, train_accuracy=0.75, reason="highest training accuracy among accepted epochs"))
    run.finish("finished", reason="ran 4 epochs", usage=usage(11000, 4000))
    if evaluated:
        tasks = [f"q{i}" for i in range(10)]
        save_eval(run, "test", 0, {task: i < 3 for i, task in enumerate(tasks)}, cost=0.25)
        save_eval(run, "test", 3, {task: i < 8 for i, task in enumerate(tasks)}, cost=0.5)
    return run
