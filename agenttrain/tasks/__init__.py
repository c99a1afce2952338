"""Task sets by name: `load_task(config)` gives the loader for `task.name`."""

from __future__ import annotations

from agenttrain.config import TaskConfig
from agenttrain.tasks.base import Task
from agenttrain.tasks.gaia import GAIATask
from agenttrain.tasks.jsonl import JsonlTask
from agenttrain.tasks.math import MathTask
from agenttrain.tasks.tabmwp import TabMWPTask


def load_task(config: TaskConfig) -> Task:
    loaders: dict[str, type] = {"math": MathTask, "jsonl": JsonlTask, "tabmwp": TabMWPTask, "gaia": GAIATask}
    return loaders[config.name](config)
