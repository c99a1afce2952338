"""Task sets by name: `load_task(config)` builds the task registered (`agenttrain.registry.tasks`) as `task.name`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agenttrain.registry import tasks

if TYPE_CHECKING:
    from agenttrain.config import TaskConfig
    from agenttrain.tasks.base import Task


def load_task(config: TaskConfig) -> Task:
    task: Task = tasks.get(config.name)(config)
    return task
