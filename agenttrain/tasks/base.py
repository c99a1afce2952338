"""What every task set shares: the `Example` record, the `Task` interface, and the seeded split."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from agenttrain.config import TaskConfig
from agenttrain.errors import UserError

AnswerFormat = Literal["boxed", "final_answer"]


class DataError(UserError):
    """A data file that cannot be read; the message names the file and the line."""


@dataclass(frozen=True)
class Example:
    id: str
    question: str  # the full task text shown to the agent (tables rendered, attachments named)
    answer: str  # the gold answer as the scorer expects it
    fields: dict[str, Any] = field(default_factory=dict)  # extra fields the scorer reads (choices, unit, ...)
    files: tuple[Path, ...] = ()  # attachments copied into the rollout's working directory
    where: str = field(default="", compare=False)  # file and line (or problem) it was read from, for errors


@dataclass(frozen=True)
class Splits:
    train: list[Example]
    test: list[Example]
    val: list[Example]
    rule: str = ""  # how the sizes were chosen, when no size was given

    def get(self, name: str) -> list[Example]:
        if name not in ("train", "test", "val"):
            raise UserError(f"unknown split {name!r}; use train, test or val")
        return getattr(self, name)

    def limited(self, limit: int | None) -> Splits:
        """The first `limit` examples of each split (`task.limit`, `--limit`: a quick smoke run)."""
        if limit is None:
            return self
        return replace(self, train=self.train[:limit], test=self.test[:limit], val=self.val[:limit])

    def describe(self) -> str:
        """`20 train, 80 test examples`, and the rule that chose the sizes if it was a default."""
        counts = [f"{len(self.train)} train"] + [f"{len(self.val)} val"] * bool(self.val) + [f"{len(self.test)} test"]
        return f"{', '.join(counts)} examples" + (f" ({self.rule})" if self.rule else "")


class Task(Protocol):
    """What agenttrain reads of a task (read-only, so class attributes such as `answer_format = "boxed"` fit)."""

    @property
    def name(self) -> str: ...

    @property
    def scorer(self) -> str:
        """A name in agenttrain.registry.scorers."""
        ...

    @property
    def answer_format(self) -> AnswerFormat:
        """What the agent is asked to end with."""
        ...

    def splits(self) -> Splits:
        """The seeded train/test/val examples that pass the config's filters."""
        ...


def _stable_order(examples: Sequence[Example], seed: int) -> list[Example]:
    """Sort by id first so that the split depends on the data and the seed, not on file order."""
    ordered = sorted(examples, key=lambda e: hashlib.sha256(e.id.encode()).hexdigest())
    random.Random(seed).shuffle(ordered)
    return ordered


def check_unique_ids(examples: Sequence[Example], what: str = "two examples") -> None:
    """Ids decide the split, the journal and the cache: two examples with one id would be confused."""
    first: dict[str, Example] = {}
    for example in examples:
        if (seen := first.setdefault(example.id, example)) is not example:
            raise DataError(f"{example.where or 'the data'}: {what} share the id {example.id!r} (first at "
                            f"{seen.where or 'an earlier record'}); ids must be unique")


def split_examples(
    examples: Sequence[Example], train_size: int | None, test_size: int | None, val_size: int, seed: int,
    source: str = "the data",
) -> Splits:
    """Disjoint seeded train/val/test samples. `None` for a size means "all that remain". `source` names the
    data in errors."""
    check_unique_ids(examples)
    pool = _stable_order(examples, seed)
    if not pool:
        raise DataError(f"{source}: no examples: the data is empty, or the filters (types, levels, ...) "
                        "exclude everything")
    fixed = (train_size or 0) + val_size + (test_size or 0)
    if fixed > len(pool):
        asked = [f"task.{name}_size={size}" for name, size in
                 (("train", train_size), ("val", val_size), ("test", test_size)) if size]
        raise DataError(
            f"{source}: {' + '.join(asked)} asks for {fixed} examples, but only {len(pool)} match the "
            f"filters; lower the sizes, or leave task.test_size out to use all that remain"
        )
    train_n = train_size if train_size is not None else len(pool) - val_size - (test_size or 0)
    train = pool[:train_n]
    val = pool[train_n : train_n + val_size]
    rest = pool[train_n + val_size :]
    test = rest if test_size is None else rest[:test_size]
    return Splits(train=train, test=test, val=val)


class PathTask:
    """A task read from `task.path` whose examples are split by the config's sizes and seed."""

    name: ClassVar[str]
    scorer: ClassVar[str]
    answer_format: ClassVar[AnswerFormat]
    path_hint: ClassVar[str]  # what `task.path` should point at, for the error when it is missing
    # the typical length of a question as the agent sees it: `--dry-run` assumes it before the data is pulled
    question_chars: ClassVar[int]

    @classmethod
    def typical_question_chars(cls, config: TaskConfig) -> int:
        """Characters of a typical question under `config`'s filters (a measured mean, or a stated guess)."""
        return cls.question_chars

    def __init__(self, config: TaskConfig) -> None:
        if config.path is None:
            raise DataError(f"task.path: the {self.name} task needs {self.path_hint}")
        self.config = config
        self.path: Path = config.path

    def examples(self) -> list[Example]:
        raise NotImplementedError

    def splits(self) -> Splits:
        c = self.config
        return split_examples(self.examples(), c.train_size, c.test_size, c.val_size, c.seed, str(c.path)
                              ).limited(c.limit)
