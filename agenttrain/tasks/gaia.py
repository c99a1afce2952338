"""GAIA (Mialon et al.): tool-use questions with attachments, read from a local copy of the HF dataset.

`agenttrain data pull gaia` (or `huggingface_hub.snapshot_download("gaia-benchmark/GAIA", ...)`) leaves
`2023/<split>/` folders holding `metadata.parquet` (current layout), `metadata.level{N}.parquet`, or
`metadata.jsonl` (the layout before the parquet conversion), with the attachments beside them.
`task.path` may name the download's root, its `2023` folder or the split folder itself.

GAIA agents search the web and fetch pages, so this task needs a sandbox with network access.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from agenttrain.config import TaskConfig
from agenttrain.registry import tasks
from agenttrain.tasks.base import DataError, Example, PathTask
from agenttrain.tasks.files import read_jsonl, require_field

UNANSWERED = ("", "?")  # how GAIA's test split hides its answers


def split_folder(path: Path, split: str) -> Path:
    """The folder holding the split's metadata, from the download root, its `2023` folder or itself."""
    candidates = [path / "2023" / split, path / split, path]
    for folder in candidates:
        if _metadata_files(folder):
            return folder
    tried = ", ".join(str(c) for c in candidates)
    raise DataError(
        f"task.path: no GAIA metadata (metadata.parquet, metadata.level1.parquet or metadata.jsonl) for split "
        f"{split!r}; looked in {tried}. Run `agenttrain data pull gaia --dest {path}` or fix task.path"
    )


def _metadata_files(folder: Path) -> list[Path]:
    """The complete table if present, else the per-level tables, else the older JSONL."""
    for pattern in ("metadata.parquet", "metadata.level*.parquet", "metadata.jsonl"):
        if found := sorted(folder.glob(pattern)):
            return found
    return []


def _read_parquet(file: Path) -> list[tuple[str, dict[str, Any]]]:
    import pyarrow as pa  # heavy (numpy): only when GAIA's parquet metadata is read
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(file).to_pylist()
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{file}: not a readable parquet file ({exc}); download it again") from None
    return [(f"{file}: row {n}", row) for n, row in enumerate(rows, start=1)]


def _records(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    records = []
    for file in _metadata_files(folder):
        if file.suffix == ".parquet":
            records += _read_parquet(file)
        else:
            records += [(f"{file}:{n}", record) for n, record in read_jsonl(file)]
    return records


def _level(value: Any, where: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: `Level` must be 1, 2 or 3, not {value!r}") from None


def _attachment(folder: Path, file_name: str, where: str) -> Path:
    attachment = (folder / file_name).resolve()
    if not attachment.is_file():
        raise DataError(
            f"{where}: attachment {file_name!r} not found at {attachment}; download the whole dataset "
            f"(`agenttrain data pull gaia`), not only its metadata"
        )
    return attachment


def _example(folder: Path, where: str, record: dict[str, Any]) -> Example:
    task_id = str(require_field(record, "task_id", where))
    question = str(require_field(record, "Question", where))
    file_name = str(record.get("file_name") or "")
    files = (_attachment(folder, file_name, where),) if file_name else ()
    if file_name:
        question += f"\n\nThe file {file_name!r} that this question refers to is in your working directory."
    return Example(
        id=task_id,
        question=question,
        answer=str(record.get("Final answer") or "").strip(),
        fields={"level": _level(record.get("Level"), where), "file_name": file_name or None},
        files=files,
        where=where,
    )


class GAIAConfig(TaskConfig):
    levels: list[int] | None = None  # 1-3
    gaia_split: Literal["validation", "test"] = "validation"


@tasks.register("gaia")
class GAIATask(PathTask):
    config_class = GAIAConfig
    config: GAIAConfig
    name = "gaia"
    scorer = "gaia"
    answer_format = "final_answer"
    requires_network = True  # web search and page fetching: the run must set sandbox.network: true
    path_hint = "the folder that `agenttrain data pull gaia` filled"
    question_chars = 450  # a guess, not a measurement: the data is gated and may not be copied here

    def examples(self) -> list[Example]:
        folder = split_folder(self.path, self.config.gaia_split)
        examples = [_example(folder, where, record) for where, record in _records(folder)]
        if self.config.levels:
            examples = [e for e in examples if e.fields["level"] in self.config.levels]
        self._require_answers(examples)
        return examples

    def _require_answers(self, examples: list[Example]) -> None:
        unanswered = [e.id for e in examples if e.answer in UNANSWERED]
        if unanswered:
            raise DataError(
                f"GAIA split {self.config.gaia_split!r}: {len(unanswered)} of {len(examples)} tasks have no public "
                f"answer ('?' or empty, e.g. task {unanswered[0]}), so they can be neither trained nor scored; "
                f"use task.gaia_split: validation"
            )
