"""MATH loading, filtering and the seeded split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agenttrain.tasks import load_task
from agenttrain.tasks.base import DataError, Example, split_examples
from agenttrain.tasks.jsonl import JsonlConfig
from agenttrain.tasks.math import MathConfig
from tests.support.files import shared_data

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


def write_jsonl(path: Path, ids: list[str]) -> Path:
    path.write_text("".join(json.dumps({"question": f"q {i}", "answer": "1", "id": i}) + "\n" for i in ids))
    return path


def test_the_same_file_for_train_and_test_is_refused_as_leakage(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", ["a", "b", "c"])
    task = load_task(JsonlConfig(name="jsonl", train_path=data, test_path=data, train_size=1, test_size=1))
    with pytest.raises(DataError, match=rf"^task.train_path and task.test_path are the same file \({data}\).*leakage"):
        task.splits()


def test_an_id_in_both_the_train_and_the_test_file_is_refused_naming_both_lines(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", ["a", "b", "c"])
    test = write_jsonl(tmp_path / "test.jsonl", ["x", "b"])
    task = load_task(JsonlConfig(name="jsonl", train_path=train, test_path=test, train_size=1, test_size=1))
    with pytest.raises(DataError, match=rf"^{test}:2: two of the train, test and val files share the id 'b' "
                                        rf"\(first at {train}:2\)"):
        task.splits()


def test_a_duplicate_id_names_the_file_and_both_lines(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"problem": f"p{i}", "answer": "1", "unique_id": u}) + "\n"
                            for i, u in enumerate(["a", "b", "a"])))
    with pytest.raises(DataError, match=rf"^{data}:3: two examples share the id 'a' \(first at {data}:1\)"):
        load_task(MathConfig(name="math", path=data, train_size=1, test_size=1)).splits()


def test_a_split_larger_than_the_data_names_the_keys_and_the_file(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", ["a", "b", "c"])
    with pytest.raises(DataError, match=rf"^{data}: task.test_size=80 asks for 80 examples, but only 3 match"):
        load_task(JsonlConfig(name="jsonl", path=data, train_size=0, test_size=80)).splits()
