"""Task sets by name: `load_task(config)` gives the loader for `task.name`."""

from __future__ import annotations

from agenttrain.config import TaskConfig
from agenttrain.tasks.base import Task
from agenttrain.tasks.jsonl import JsonlTask
from agenttrain.tasks.math import MathTask


def load_task(config: TaskConfig) -> Task:
    loaders: dict[str, type] = {"math": MathTask, "jsonl": JsonlTask}
    return loaders[config.name](config)
