"""TabMWP (Lu et al., PromptPG): table math word problems from PromptPG's `problems_*.json` files.

A file maps a problem id to a record (question, table_title, table, choices, unit, answer, ques_type,
grade, ...). The agent sees the table as text (title, then the pipe table), the question with its unit
and, for multiple choice, the lettered options. It is asked to end with `FINAL ANSWER: X` rather than a
box: many answers are words (`surplus`, `7:25 P.M.`), and the scorer reads either marker anyway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from agenttrain.config import TaskConfig
from agenttrain.registry import tasks
from agenttrain.scorers.tabmwp import OPTION_LETTERS
from agenttrain.tasks.base import DataError, Example, PathTask
from agenttrain.tasks.files import read_json, require_field

DEFAULT_FILE = "problems_test.json"  # the split the paper samples from; `data pull tabmwp` writes it


def _problems_file(path: Path) -> Path:
    if path.is_file():
        return path
    if (path / DEFAULT_FILE).is_file():
        return path / DEFAULT_FILE
    found = sorted(p.name for p in path.glob("problems_*.json"))
    raise DataError(
        f"task.path: {path} has no {DEFAULT_FILE}; point task.path at one of its PromptPG files "
        f"({', '.join(found) or 'none found: run `agenttrain data pull tabmwp`'})"
    )


def render_question(record: dict[str, Any]) -> str:
    """The table as text, then the question (with its unit) and any lettered options."""
    table = record["table"] if not record.get("table_title") else f"{record['table_title']}\n{record['table']}"
    question = record["question"] + (f" (Unit: {record['unit']})" if record.get("unit") else "")
    parts = [f"Table:\n{table}", f"Question: {question}"]
    if record.get("choices"):
        lettered = zip(OPTION_LETTERS, record["choices"], strict=False)  # at most 6 choices, checked on load
        parts.append("Options: " + " ".join(f"({letter}) {choice}" for letter, choice in lettered))
    return "\n\n".join(parts)


def _example(problem_id: str, record: Any, where: str) -> Example:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object for each problem id")
    for name in ("question", "table", "answer"):
        require_field(record, name, where)
    choices = record.get("choices")
    if choices is not None and (not isinstance(choices, list) or len(choices) > len(OPTION_LETTERS)):
        raise DataError(f"{where}: `choices` must be a list of at most {len(OPTION_LETTERS)} options or null")
    return Example(
        id=str(problem_id),
        question=render_question(record),
        answer=str(record["answer"]),
        fields={
            "choices": choices,
            "unit": record.get("unit"),
            "ques_type": record.get("ques_type"),
            "ans_type": record.get("ans_type"),
            "grade": record.get("grade"),
        },
        where=where,
    )


class TabMWPConfig(TaskConfig):
    ques_types: list[Literal["free_text", "multi_choice"]] | None = None
    grades: list[int] | None = None


@tasks.register("tabmwp")
class TabMWPTask(PathTask):
    config_class = TabMWPConfig
    config: TabMWPConfig
    name = "tabmwp"
    scorer = "tabmwp"
    answer_format = "final_answer"
    path_hint = f"a PromptPG {DEFAULT_FILE} file or its folder"
    question_chars = 279  # mean of the rendered question (table, question, options) over 1,000 test problems

    def examples(self) -> list[Example]:
        file = _problems_file(self.path)
        problems = read_json(file)
        if not isinstance(problems, dict) or not problems:
            raise DataError(f"{file}: expected PromptPG's layout, an object mapping problem ids to problems")
        examples = [_example(pid, record, f"{file}: problem {pid}") for pid, record in problems.items()]
        return self._filter(examples)

    def _filter(self, examples: list[Example]) -> list[Example]:
        ques_types, grades = self.config.ques_types, self.config.grades
        if ques_types:
            examples = [e for e in examples if e.fields["ques_type"] in ques_types]
        if grades:
            examples = [e for e in examples if e.fields["grade"] in grades]
        return examples
