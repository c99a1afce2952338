"""A task whose examples are in the config itself: `task: {name: inline, train: [...], test: [...]}`, each example a
mapping with a question and an answer (the keys a jsonl task reads; without an `id`, the third example of
`train` is `train-3`). What `agenttrain.train(task=[...])` makes of examples given in Python, so that the run
folder holds its data and works like any other.

Without `test`, 20% of `train` is held out for test, as for one jsonl file.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from agenttrain.registry import tasks
from agenttrain.tasks.base import Splits
from agenttrain.tasks.jsonl import JsonlConfig, JsonlTask

Rows = list[dict[str, Any]]


class InlineConfig(JsonlConfig):
    train: Rows = Field(min_length=1)  # {"question": ..., "answer": ...} each; other keys reach the scorer
    test: Rows = Field(default_factory=list)
    val: Rows = Field(default_factory=list)

    @model_validator(mode="after")
    def _has_data(self) -> InlineConfig:  # replaces the jsonl task's: the data is here, not in files
        if self.path or self.train_path or self.test_path or self.val_path:
            raise ValueError("an inline task holds its examples in `train` and `test`, not in files; use the jsonl "
                             "task for files")
        return self


@tasks.register("inline")
class InlineTask(JsonlTask):
    config_class = InlineConfig
    config: InlineConfig
    name = "inline"

    def _splits(self) -> Splits:
        c = self.config
        train = self.examples_of(enumerate(c.train, start=1), "task.train", "train")
        if not c.test:
            return self.split_one(train, "task.train", "task.train")
        test = self.examples_of(enumerate(c.test, start=1), "task.test", "test")
        val = self.examples_of(enumerate(c.val, start=1), "task.val", "val") if c.val else []
        return self.split_given(train, test, val, "task.train", "task.test", kind="lists")
