"""An agenttrain plugin: a task that makes its own problems, and a scorer that reads the last integer.

The task owns its config keys (`count`, `max_factor`) and needs no data file; the scorer is named by the
task, so a config says only `task: {name: products}`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from typing import Any

from agenttrain.config import TaskConfig
from agenttrain.scorers import Verdict
from agenttrain.tasks.base import Example, Splits, split_examples

INTEGER = re.compile(r"-?\d+")


class ProductsConfig(TaskConfig):
    """`task:` keys of the products task, on top of the sizes and seed every task has."""

    needs_path = False  # the problems are generated, not read

    count: int = 12  # problems to generate
    max_factor: int = 12


class ProductsTask:
    config_class = ProductsConfig
    name = "products"
    scorer = "last_integer"
    answer_format = "boxed"

    def __init__(self, config: ProductsConfig) -> None:
        self.config = config

    def examples(self) -> list[Example]:
        rng = random.Random(self.config.seed)
        pairs = [(rng.randint(2, self.config.max_factor), rng.randint(2, self.config.max_factor))
                 for _ in range(self.config.count)]
        return [Example(id=f"product-{i}", question=f"What is {a} times {b}?", answer=str(a * b))
                for i, (a, b) in enumerate(pairs)]

    def splits(self) -> Splits:
        c = self.config
        return split_examples(self.examples(), c.train_size, c.test_size, c.val_size, c.seed)


def last_integer(prediction: str | None, answer: str, fields: Mapping[str, Any]) -> Verdict:
    """Right when the last integer in the reply is the answer; runs in agenttrain's scorer processes."""
    found = INTEGER.findall(prediction or "")
    extracted = found[-1] if found else None
    return Verdict(correct=extracted is not None and int(extracted) == int(answer), extracted=extracted)
