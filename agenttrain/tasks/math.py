"""MATH (Hendrycks et al.): JSONL files or the original one-JSON-per-problem folders, filtered by type and level."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from agenttrain.config import TaskConfig
from agenttrain.registry import tasks
from agenttrain.scorers.extraction import last_boxed_content
from agenttrain.tasks.base import DataError, Example, PathTask
from agenttrain.tasks.files import read_json, read_jsonl, require_field

LEVEL = re.compile(r"(\d+)")
# Mean characters of a problem per type, measured on the 5,000 problems of MATH's test split (the paper's source)
QUESTION_CHARS = {"algebra": 145, "counting & probability": 231, "geometry": 335, "intermediate algebra": 176,
                  "number theory": 139, "prealgebra": 194, "precalculus": 198}
ALL_TYPES_CHARS = 191


def _records(path: Path) -> list[tuple[Path, str, dict[str, Any]]]:
    """(file, where, record) triples from a .jsonl file, a .json problem file, or a folder of either."""
    if path.is_file():
        files = [path]
    else:
        files = sorted(p for p in path.rglob("*") if p.suffix in (".jsonl", ".json") and p.is_file())
        if not files:
            raise DataError(f"{path}: no .jsonl or .json files found")
    records = []
    for file in files:
        if file.suffix == ".jsonl":
            records += [(file, f"{file}:{n}", r) for n, r in read_jsonl(file)]
        else:
            records.append((file, str(file), read_json(file)))
    return records


def _level(value: Any) -> int | None:
    match = LEVEL.search(str(value))
    return int(match.group(1)) if match else None


def _example(file: Path, where: str, record: dict[str, Any], root: Path) -> Example:
    problem = require_field(record, "problem", where)
    answer = record.get("answer")
    if answer in (None, ""):
        answer = last_boxed_content(require_field(record, "solution", where))
        if answer is None:
            raise DataError(f"{where}: no `answer` field and no \\boxed{{}} answer in `solution`")
    # the original release names a problem by its path, e.g. test/algebra/1.json
    default_id = str(file.relative_to(root)) if file.suffix == ".json" and root.is_dir() else where
    return Example(
        id=str(record.get("unique_id") or record.get("id") or default_id),
        question=problem,
        answer=str(answer),
        fields={"type": record.get("type") or record.get("subject"), "level": _level(record.get("level"))},
        where=where,
    )


class MathConfig(TaskConfig):
    types: list[str] | None = None  # subjects, e.g. [algebra]; case does not matter
    levels: list[int] | None = None  # difficulty 1-5


@tasks.register("math")
class MathTask(PathTask):
    config_class = MathConfig
    config: MathConfig
    name = "math"
    scorer = "math"
    answer_format = "boxed"
    path_hint = "a MATH JSONL file or a folder of them"
    question_chars = ALL_TYPES_CHARS

    @classmethod
    def typical_question_chars(cls, config: TaskConfig) -> int:
        types = [QUESTION_CHARS.get(t.lower()) for t in getattr(config, "types", None) or []]
        known = [chars for chars in types if chars is not None]
        return sum(known) // len(known) if known else ALL_TYPES_CHARS

    def examples(self) -> list[Example]:
        root = self.path
        examples = [_example(*item, root) for item in _records(root)]
        return self._filter(examples)

    def _filter(self, examples: list[Example]) -> list[Example]:
        types, levels = self.config.types, self.config.levels
        if types:
            known = {str(e.fields["type"]) for e in examples}
            wanted = {t.lower() for t in types}
            if unknown := wanted - {k.lower() for k in known}:
                raise DataError(f"task.types: {sorted(unknown)} not in the data; available: {sorted(known)}")
            examples = [e for e in examples if str(e.fields["type"]).lower() in wanted]
        if levels:
            examples = [e for e in examples if e.fields["level"] in set(levels)]
        return examples
