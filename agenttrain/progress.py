"""A rich progress bar on stderr: epoch, tasks done, accuracy so far, tokens and cost."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agenttrain.records import EpochMetrics
from agenttrain.usage import Usage


class RichReporter:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("acc {task.fields[accuracy]}"),
            TextColumn("run total {task.fields[tokens]} tok ${task.fields[cost]:.4f}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task_id: Any = None
        self.correct = 0
        self.done = 0

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def epoch_started(self, epoch: int, phase: str, tasks: int) -> None:
        self.correct = self.done = 0
        label = f"epoch {epoch}" + ("" if phase == "candidate" else f" ({phase})")
        self.task_id = self.progress.add_task(label, total=tasks, accuracy="-", tokens=0, cost=0.0)

    def rollout_done(self, record: dict[str, Any], usage: Usage) -> None:
        self.done += 1
        self.correct += bool(record["correct"])
        self.progress.update(
            self.task_id, advance=1, accuracy=f"{self.correct / self.done:.2f}", tokens=usage.total_tokens,
            cost=usage.cost_usd,
        )

    def waiting(self, message: str) -> None:
        self.console.print(f"[yellow]waiting:[/] {message}", highlight=False)

    def epoch_done(self, metrics: EpochMetrics) -> None:
        self.console.print(
            f"epoch {metrics.epoch}: train accuracy {metrics.train_accuracy:.3f}, {metrics.status}, "
            f"{metrics.applied_actions} action(s), {metrics.function_count} function(s)"
        )
