"""MATH loading, filtering and the seeded split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agenttrain.tasks import load_task
from agenttrain.tasks.base import DataError, Example, split_examples
from agenttrain.tasks.jsonl import JsonlConfig
from agenttrain.tasks.math import MathConfig
from tests.conftest import shared_data

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "math-sample.jsonl"


def examples(n: int) -> list[Example]:
    return [Example(id=f"e{i}", question=f"q{i}", answer=str(i)) for i in range(n)]


def test_split_is_disjoint_and_a_pure_function_of_data_and_seed():
    data = examples(30)
    first = split_examples(data, 5, 10, 3, seed=1)
    shuffled = split_examples(list(reversed(data)), 5, 10, 3, seed=1)
    ids = lambda xs: [e.id for e in xs]  # noqa: E731
    assert (ids(first.train), ids(first.test), ids(first.val)) == (ids(shuffled.train), ids(shuffled.test),
                                                                    ids(shuffled.val))
    assert len({*ids(first.train), *ids(first.test), *ids(first.val)}) == 18
    assert ids(split_examples(data, 5, 10, 3, seed=2).train) != ids(first.train)


def test_split_refuses_more_than_there_is_and_duplicate_ids():
    with pytest.raises(DataError, match="only 10 match"):
        split_examples(examples(10), 8, 8, 0, seed=0)
    with pytest.raises(DataError, match="share the id"):
        split_examples(examples(3) + examples(1), 1, 1, 0, seed=0)
    with pytest.raises(DataError, match="no examples"):
        split_examples([], 1, 1, 0, seed=0)


def test_math_sample_filters_by_type_and_level():
    task = load_task(MathConfig(name="math", path=SAMPLE, types=["algebra"], levels=[3, 4], train_size=2,
                                test_size=None))
    found = task.examples()
    assert found and all(e.fields["type"] == "Algebra" and e.fields["level"] in (3, 4) for e in found)
    assert all(e.answer for e in found)  # derived from the solution's \boxed{}
    splits = task.splits()
    assert len(splits.train) == 2 and len(splits.test) == len(found) - 2


def test_unknown_type_lists_the_available_ones():
    with pytest.raises(DataError, match="available"):
        load_task(MathConfig(name="math", path=SAMPLE, types=["Topology"])).examples()


def test_original_one_file_per_problem_layout(tmp_path):
    folder = tmp_path / "test" / "algebra"
    folder.mkdir(parents=True)
    (folder / "1.json").write_text(json.dumps({"problem": "p", "solution": "\\boxed{3}", "level": "Level 2",
                                               "type": "Algebra"}))
    [example] = load_task(MathConfig(name="math", path=tmp_path, train_size=1, test_size=0)).examples()
    assert example.id == "test/algebra/1.json" and example.answer == "3" and example.fields["level"] == 2


def test_a_bad_line_names_the_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"problem": "p", "answer": "1"}\n{broken\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2"):
        load_task(MathConfig(name="math", path=path)).examples()


def test_jsonl_task_with_separate_files_and_custom_fields(tmp_path):
    for name in ("train", "test"):
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(json.dumps({"q": f"{name} {i}", "a": str(i), "id": f"{name}-{i}"}) + "\n" for i in range(5))
        )
    task = load_task(JsonlConfig(name="jsonl", train_path=tmp_path / "train.jsonl", test_path=tmp_path / "test.jsonl",
                                question_field="q", answer_field="a", scorer="numeric", train_size=3,
                                test_size=None))
    splits = task.splits()
    assert len(splits.train) == 3 and len(splits.test) == 5
    assert all(e.id.startswith("train") for e in splits.train) and task.answer_format == "boxed"


def test_jsonl_missing_field_is_named(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(DataError, match="missing field 'answer'"):
        load_task(JsonlConfig(name="jsonl", path=path)).splits()


def test_real_math_test_split_loads_with_paper_sizes():
    path = shared_data("math/test.jsonl")
    task = load_task(MathConfig(name="math", path=path, types=["Number Theory"], train_size=20, test_size=80))
    splits = task.splits()
    assert len(splits.train) == 20 and len(splits.test) == 80
    assert all(e.fields["type"] == "Number Theory" for e in splits.train + splits.test)


def test_a_file_saved_with_a_byte_order_mark_loads(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes("\ufeff".encode() + json.dumps({"problem": "p", "answer": "1"}).encode() + b"\n")
    [example] = load_task(MathConfig(name="math", path=path, train_size=1, test_size=0)).examples()
    assert example.answer == "1"
