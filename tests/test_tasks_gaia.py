"""GAIA loading from both download layouts, with made-up records only (GAIA asks not to re-share its data)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agenttrain.tasks.base import DataError
from agenttrain.tasks.gaia import GAIAConfig, GAIATask


def _record(n: int, *, level: int = 1, answer: str | None = None, file_name: str = "") -> dict[str, Any]:
    return {
        "task_id": f"00000000-0000-0000-0000-{n:012d}",
        "Question": f"What is {n} + {n}?",
        "Level": level,
        "Final answer": str(2 * n) if answer is None else answer,
        "file_name": file_name,
        "Annotator Metadata": {"Steps": "1. Add.", "Number of steps": "1", "Tools": "None"},
    }


def _jsonl(folder: Path, records: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return folder


def _parquet(folder: Path, records: list[dict[str, Any]], name: str = "metadata.parquet") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{**r, "Level": str(r["Level"]), "file_path": f"2023/validation/{r['file_name']}" if r["file_name"] else ""}
            for r in records]
    pq.write_table(pa.Table.from_pylist(rows), folder / name)
    return folder


def _task(path: Path, **settings: Any) -> GAIATask:
    return GAIATask(GAIAConfig(name="gaia", path=path, **settings))


RECORDS = [_record(1), _record(2, level=2), _record(3, level=3), _record(4, level=2)]


@pytest.mark.parametrize("write", [_jsonl, _parquet])
@pytest.mark.parametrize("relative", ["", "2023", "2023/validation"])
def test_both_layouts_load_from_the_root_the_2023_folder_or_the_split(tmp_path: Path, write, relative: str):
    write(tmp_path / "2023" / "validation", RECORDS)
    examples = _task(tmp_path / relative).examples()
    assert [(e.id[-1], e.question, e.answer, e.fields["level"]) for e in examples] == [
        ("1", "What is 1 + 1?", "2", 1), ("2", "What is 2 + 2?", "4", 2),
        ("3", "What is 3 + 3?", "6", 3), ("4", "What is 4 + 4?", "8", 2),
    ]


def test_per_level_parquet_files_are_read_together(tmp_path: Path):
    folder = tmp_path / "2023" / "validation"
    _parquet(folder, RECORDS[:1], "metadata.level1.parquet")
    _parquet(folder, [RECORDS[1], RECORDS[3]], "metadata.level2.parquet")
    assert sorted(e.fields["level"] for e in _task(tmp_path).examples()) == [1, 2, 2]


def test_levels_filter_and_seeded_split(tmp_path: Path):
    _jsonl(tmp_path, [_record(n, level=1 + n % 3) for n in range(30)])
    level_two = _task(tmp_path, levels=[2], train_size=3, test_size=None, seed=1).splits()
    assert {e.fields["level"] for e in level_two.train + level_two.test} == {2}
    assert len(level_two.train) == 3 and len(level_two.test) == 7


def test_an_attachment_is_an_absolute_file_named_in_the_question(tmp_path: Path):
    folder = _jsonl(tmp_path / "2023" / "validation", [_record(1, file_name="sales.csv")])
    (folder / "sales.csv").write_text("month,total\nMay,3\n")
    (example,) = _task(tmp_path / "2023").examples()
    assert example.files == ((folder / "sales.csv").resolve(),)
    assert example.files[0].is_absolute()
    assert "'sales.csv'" in example.question and "working directory" in example.question


def test_a_missing_attachment_is_a_clear_error(tmp_path: Path):
    _parquet(tmp_path / "2023" / "validation", [_record(1, file_name="sales.xlsx")])
    with pytest.raises(DataError, match=r"attachment 'sales\.xlsx' not found"):
        _task(tmp_path).examples()


@pytest.mark.parametrize("hidden", ["?", ""])
def test_the_test_split_without_answers_is_refused(tmp_path: Path, hidden: str):
    _jsonl(tmp_path / "2023" / "test", [_record(1, answer=hidden), _record(2, answer=hidden)])
    with pytest.raises(DataError, match=r"'test': 2 of 2 tasks have no public answer.*gaia_split: validation"):
        _task(tmp_path, gaia_split="test").examples()


def test_a_folder_without_metadata_says_where_it_looked(tmp_path: Path):
    _jsonl(tmp_path / "2023" / "validation", RECORDS)
    with pytest.raises(DataError, match=r"split 'test'.*2023/test.*data pull gaia"):
        _task(tmp_path, gaia_split="test").examples()


def test_a_bad_level_names_the_record(tmp_path: Path):
    _jsonl(tmp_path, [_record(1, level="easy")])  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"metadata\.jsonl:1: `Level` must be 1, 2 or 3"):
        _task(tmp_path).examples()


def test_gaia_needs_the_network_and_is_scored_by_the_gaia_scorer(tmp_path: Path):
    task = _task(_jsonl(tmp_path, RECORDS))
    assert (task.requires_network, task.scorer, task.answer_format) == (True, "gaia", "final_answer")
