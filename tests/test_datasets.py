"""`data pull`: converting what a download leaves behind, and clear errors when the source is unreachable."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agenttrain.errors import UserError
from agenttrain.tasks.base import DataError
from agenttrain.tasks.datasets import DownloadError, convert_math, pull
from agenttrain.tasks.math import MathConfig, MathTask


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # free once the socket closes: nothing listens there


def _write_math_parquet(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def _row(solution: str, kind: str = "Algebra", level: str = "Level 2") -> dict[str, str]:
    return {"problem": f"Made-up problem solved by {solution}", "level": level, "type": kind, "solution": solution}


def test_convert_math_writes_the_jsonl_layout_the_math_task_reads(tmp_path: Path):
    snapshot = tmp_path / "snapshot"
    _write_math_parquet(snapshot / "algebra" / "test-00000-of-00001.parquet",
                        [_row("So $\\boxed{\\frac{1}{2}}$."), _row("Thus \\boxed{7}.", level="Level 5")])
    _write_math_parquet(snapshot / "geometry" / "test-00000-of-00001.parquet", [_row("\\boxed 9$", "Geometry")])
    _write_math_parquet(snapshot / "algebra" / "train-00000-of-00001.parquet", [_row("\\boxed{3}")])

    test_file = convert_math(snapshot, tmp_path / "math")

    records = [json.loads(line) for line in test_file.read_text().splitlines()]
    assert [(r["unique_id"], r["answer"], r["level"]) for r in records] == [
        ("test/algebra/0", "\\frac{1}{2}", "Level 2"),
        ("test/algebra/1", "7", "Level 5"),
        ("test/geometry/0", "9", "Level 2"),
    ]
    assert (tmp_path / "math" / "train.jsonl").read_text().count("\n") == 1
    task = MathTask(MathConfig(name="math", path=test_file, types=["Algebra"], train_size=1, test_size=1))
    assert sorted(e.answer for e in task.examples()) == ["7", "\\frac{1}{2}"]


def test_convert_math_refuses_a_folder_without_parquet_files(tmp_path: Path):
    with pytest.raises(DataError, match=r"no <subject>/<split>-\*\.parquet files"):
        convert_math(tmp_path, tmp_path / "out")


def test_convert_math_refuses_a_solution_without_an_answer(tmp_path: Path):
    _write_math_parquet(tmp_path / "algebra" / "test-0.parquet", [_row("no answer given")])
    with pytest.raises(DataError, match="row 0 has no"):
        convert_math(tmp_path, tmp_path / "out")


@pytest.mark.parametrize("name", ["math", "gaia"])
def test_an_unreachable_hub_is_a_clear_error(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DownloadError, match=f"cannot reach the Hugging Face hub at {endpoint}.*HF_ENDPOINT"):
        pull(name, tmp_path / name)


def test_an_unreachable_tabmwp_source_is_a_clear_error(tmp_path: Path):
    source = f"http://127.0.0.1:{_closed_port()}/tabmwp"
    with pytest.raises(DownloadError, match=f"cannot download {source}/problems_test.json"):
        pull("tabmwp", tmp_path / "tabmwp", source=source)
    assert not (tmp_path / "tabmwp").exists()  # no empty folder to be mistaken for data


def test_a_failed_pull_into_an_existing_folder_keeps_the_folder_and_leaves_no_partial_file(tmp_path: Path):
    source = f"http://127.0.0.1:{_closed_port()}/tabmwp"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DownloadError):
        pull("tabmwp", tmp_path / "mine", source=source)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_unknown_dataset_names_are_refused(tmp_path: Path):
    with pytest.raises(UserError, match="unknown dataset 'mmlu'; choose one of math, tabmwp, gaia"):
        pull("mmlu", tmp_path)
