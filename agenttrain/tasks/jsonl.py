"""A user's own tasks: JSONL with a question and an answer field, scored by a scorer they choose."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from pydantic import field_validator, model_validator

from agenttrain.config import TaskConfig
from agenttrain.registry import scorers, tasks
from agenttrain.scorers.in_process import PREFIX
from agenttrain.tasks.base import AnswerFormat, DataError, Example, Splits, check_unique_ids, split_examples
from agenttrain.tasks.files import read_jsonl, require_field

BOXED_SCORERS = ("math", "numeric")
DEFAULT_TEST_SHARE = 0.2  # one unsized `path`: this share of its rows is held out for test


class JsonlConfig(TaskConfig):
    train_path: Path | None = None  # instead of `path`: files already split
    test_path: Path | None = None
    val_path: Path | None = None
    question_field: str = "question"
    answer_field: str = "answer"
    id_field: str = "id"
    scorer: str | None = None  # a name in agenttrain.registry.scorers; default exact
    needs_path: ClassVar[bool] = False  # `path`, or `train_path` and `test_path`: checked when it is split

    @field_validator("scorer")
    @classmethod
    def _registered(cls, value: str | None) -> str | None:
        if value is not None and value.startswith(PREFIX) and value not in scorers.names():
            raise ValueError(f"{value!r} is a Python function that agenttrain.train() was given in another process; "
                             f"register it again in this one, agenttrain.register_scorer(function), then evaluate "
                             f"from Python (the command line cannot call it)")
        if value is not None:
            scorers.get(value)
        return value

    @model_validator(mode="before")
    @classmethod
    def _unsized(cls, data: Any) -> Any:
        """A user's own data has no paper sizes: left out, each split takes every row (one `path`: the default
        rule in `JsonlTask`, 20% held out for test)."""
        return {"train_size": None, "test_size": None, **data} if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _has_data(self) -> JsonlConfig:
        if self.path is None and (self.train_path is None or self.test_path is None):
            raise ValueError("set `task.path`, or both `task.train_path` and `task.test_path`")
        return self


@tasks.register("jsonl")
class JsonlTask:
    config_class: type[JsonlConfig] = JsonlConfig
    name = "jsonl"

    def __init__(self, config: JsonlConfig) -> None:
        self.config = config
        self.scorer = config.scorer or "exact"
        self.answer_format: AnswerFormat = "boxed" if self.scorer in BOXED_SCORERS else "final_answer"

    def read(self, path: Path) -> list[Example]:
        return self.examples_of(read_jsonl(path), str(path))

    def examples_of(self, records: Iterable[tuple[int, dict[str, Any]]], source: str, unnamed: str = "line"
                    ) -> list[Example]:
        """Examples from numbered records (a file's lines, or a list given in the config); errors name
        `source:number`, and a record without an id is `unnamed-number`."""
        c = self.config
        examples = []
        for number, record in records:
            where = f"{source}:{number}"
            examples.append(
                Example(
                    id=str(record.get(c.id_field) or f"{unnamed}-{number}"),
                    question=str(require_field(record, c.question_field, where)),
                    answer=str(require_field(record, c.answer_field, where)),
                    fields={k: v for k, v in record.items() if k not in (c.question_field, c.answer_field)},
                    where=where,
                )
            )
        if not examples:
            raise DataError(f"{source}: no records")
        check_unique_ids(examples)
        return examples

    def splits(self) -> Splits:
        return self._splits().limited(self.config.limit)

    def _splits(self) -> Splits:
        c = self.config
        if c.path is not None:
            return self.split_one(self.read(c.path), c.path.name, str(c.path))
        if c.train_path is None or c.test_path is None:
            raise DataError("task: a jsonl task needs `path`, or both `train_path` and `test_path`")
        self._check_distinct_files()
        val = self.read(c.val_path) if c.val_path else []
        return self.split_given(self.read(c.train_path), self.read(c.test_path), val, str(c.train_path),
                                str(c.test_path))

    def split_given(self, train_pool: list[Example], test_pool: list[Example], val: list[Example],
                    train_source: str, test_source: str, kind: str = "files") -> Splits:
        """Examples already split: every one of each (`train_size`, `test_size`: fewer); without a val set,
        `val_size` examples come out of the training ones."""
        c = self.config
        # a task in two of them would be trained on and then scored as unseen: test leakage
        check_unique_ids([*train_pool, *test_pool, *val], f"two of the train, test and val {kind}")
        carved = split_examples(train_pool, c.train_size, 0, 0 if val else c.val_size, c.seed, train_source)
        test = split_examples(test_pool, 0, c.test_size, 0, c.seed, test_source).test
        return Splits(train=carved.train, test=test, val=val or carved.val)

    def split_one(self, examples: list[Example], name: str, source: str) -> Splits:
        """One pool split by the sizes; without sizes, `DEFAULT_TEST_SHARE` held out for test."""
        c = self.config
        if c.train_size is not None or c.test_size is not None:
            return split_examples(examples, c.train_size, c.test_size, c.val_size, c.seed, source)
        held_out = max(1, round(DEFAULT_TEST_SHARE * (len(examples) - c.val_size))) if len(examples) > 1 else 0
        splits = split_examples(examples, None, held_out, c.val_size, c.seed, source)
        rule = f"no sizes set: {DEFAULT_TEST_SHARE:.0%} of {name} held out for test, the rest for training"
        return replace(splits, rule=rule)

    def _check_distinct_files(self) -> None:
        files = {key: getattr(self.config, key) for key in ("train_path", "test_path", "val_path")}
        given = [(key, path) for key, path in files.items() if path is not None]
        for i, (key, path) in enumerate(given):
            for other_key, other in given[i + 1:]:
                if path.samefile(other):
                    raise DataError(f"task.{key} and task.{other_key} are the same file ({path}): its examples would "
                                    "be both trained on and scored (test leakage); give separate files, or one "
                                    "task.path to split")
