"""A user's own tasks: JSONL with a question and an answer field, scored by a scorer they choose."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from agenttrain.config import TaskConfig
from agenttrain.tasks.base import DataError, Example, Splits, split_examples
from agenttrain.tasks.files import read_jsonl, require_field

BOXED_SCORERS = ("math", "numeric")
DEFAULT_TEST_SHARE = 0.2  # one unsized `path`: this share of its rows is held out for test


class JsonlTask:
    name = "jsonl"

    def __init__(self, config: TaskConfig) -> None:
        self.config = config
        self.scorer = config.scorer or "exact"
        self.answer_format = "boxed" if self.scorer in BOXED_SCORERS else "final_answer"
        if config.path is None and (config.train_path is None or config.test_path is None):
            raise DataError("task: a jsonl task needs `path`, or both `train_path` and `test_path`")

    def read(self, path: Path) -> list[Example]:
        c = self.config
        examples = []
        for number, record in read_jsonl(path):
            where = f"{path}:{number}"
            examples.append(
                Example(
                    id=str(record.get(c.id_field) or f"line-{number}"),
                    question=str(require_field(record, c.question_field, where)),
                    answer=str(require_field(record, c.answer_field, where)),
                    fields={k: v for k, v in record.items() if k not in (c.question_field, c.answer_field)},
                )
            )
        if not examples:
            raise DataError(f"{path}: no records")
        return examples

    def splits(self) -> Splits:
        return self._splits().limited(self.config.limit)

    def _splits(self) -> Splits:
        c = self.config
        if c.path is not None:
            return self._split_one_file(c.path)
        train = split_examples(self.read(c.train_path), c.train_size, 0, 0, c.seed, str(c.train_path)).train
        test = split_examples(self.read(c.test_path), 0, c.test_size, 0, c.seed, str(c.test_path)).test
        val = self.read(c.val_path) if c.val_path else []
        return Splits(train=train, test=test, val=val)

    def _split_one_file(self, path: Path) -> Splits:
        c, examples = self.config, self.read(path)
        if c.train_size is not None or c.test_size is not None:
            return split_examples(examples, c.train_size, c.test_size, c.val_size, c.seed, str(path))
        held_out = max(1, round(DEFAULT_TEST_SHARE * (len(examples) - c.val_size))) if len(examples) > 1 else 0
        splits = split_examples(examples, None, held_out, c.val_size, c.seed, str(path))
        rule = f"no sizes set: {DEFAULT_TEST_SHARE:.0%} of {path.name} held out for test, the rest for training"
        return replace(splits, rule=rule)
