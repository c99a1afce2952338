"""TabMWP loading: PromptPG's JSON, the rendered table and options, filters, and the seeded split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agenttrain.scorers import judge
from agenttrain.tasks.base import DataError
from agenttrain.tasks.tabmwp import TabMWPConfig, TabMWPTask
from tests.support.files import shared_data


def _problem(n: int, *, choices: list[str] | None = None, grade: int = 3, unit: str | None = None) -> dict[str, Any]:
    """A made-up record in PromptPG's format."""
    return {
        "question": f"How many stickers does Kid {n} have?",
        "choices": choices,
        "answer": choices[0] if choices else str(n),
        "unit": unit,
        "table_title": "Stickers" if n % 2 else None,
        "table": f"Name | Stickers\nKid {n} | {n}",
        "ques_type": "multi_choice" if choices else "free_text",
        "ans_type": "extractive_text" if choices else "integer_number",
        "grade": grade,
        "split": "test",
    }


def _write(path: Path, problems: dict[str, dict[str, Any]]) -> Path:
    path.write_text(json.dumps(problems), encoding="utf-8")
    return path


def _task(path: Path, **settings: Any) -> TabMWPTask:
    return TabMWPTask(TabMWPConfig(name="tabmwp", path=path, **settings))


def test_the_question_shows_the_table_the_unit_and_the_options(tmp_path: Path):
    problems = {"1": _problem(1, unit="stickers"), "2": _problem(2, choices=["more", "fewer"])}
    examples = {e.id: e for e in _task(_write(tmp_path / "problems_test.json", problems)).examples()}

    assert examples["1"].question == (
        "Table:\nStickers\nName | Stickers\nKid 1 | 1\n\nQuestion: How many stickers does Kid 1 have? (Unit: stickers)"
    )
    assert examples["2"].question.endswith("Kid 2 have?\n\nOptions: (A) more (B) fewer")
    assert "Stickers\nName" not in examples["2"].question  # no title line when the title is empty
    assert examples["2"].fields["choices"] == ["more", "fewer"]
    assert examples["1"].fields["unit"] == "stickers"


def test_filters_and_the_seeded_split(tmp_path: Path):
    problems = {str(n): _problem(n, grade=1 + n % 8, choices=["yes", "no"] if n % 4 == 0 else None) for n in range(80)}
    path = _write(tmp_path / "problems.json", problems)

    multi = _task(path, ques_types=["multi_choice"], train_size=None, test_size=0).splits().train
    assert sorted(int(e.id) for e in multi) == list(range(0, 80, 4))
    low_grades = _task(path, grades=[1, 2], train_size=None, test_size=0).splits().train
    assert {e.fields["grade"] for e in low_grades} == {1, 2} and len(low_grades) == 20

    first = _task(path, train_size=5, test_size=10, seed=3).splits()
    again = _task(path, train_size=5, test_size=10, seed=3).splits()
    assert [e.id for e in first.train + first.test] == [e.id for e in again.train + again.test]
    assert not {e.id for e in first.train} & {e.id for e in first.test}


def test_a_folder_means_its_problems_test_json(tmp_path: Path):
    _write(tmp_path / "problems_test.json", {"7": _problem(7)})
    assert [e.id for e in _task(tmp_path).examples()] == ["7"]


def test_a_folder_without_problems_test_json_lists_what_is_there(tmp_path: Path):
    _write(tmp_path / "problems_dev1k.json", {"7": _problem(7)})
    with pytest.raises(DataError, match=r"no problems_test\.json.*problems_dev1k\.json"):
        _task(tmp_path).examples()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ([_problem(1)], "expected PromptPG's layout"),
        ({"1": {**_problem(1), "answer": ""}}, "problem 1: missing field 'answer'"),
        ({"1": _problem(1, choices=list("abcdefg"))}, "at most 6 options"),
        ({"1": "not a record"}, "expected an object"),
    ],
)
def test_malformed_files_name_the_problem(tmp_path: Path, content: Any, message: str):
    with pytest.raises(DataError, match=message):
        _task(_write(tmp_path / "problems.json", content)).examples()


def test_the_real_test1k_loads_and_each_gold_answer_scores_as_correct():
    examples = _task(shared_data("tabmwp/problems_test1k.json")).examples()
    assert len(examples) == 1000
    assert sum(e.fields["ques_type"] == "multi_choice" for e in examples) == 249
    wrong = [e.id for e in examples if not judge("tabmwp", f"FINAL ANSWER: {e.answer}", e.answer, e.fields).correct]
    assert wrong == []
