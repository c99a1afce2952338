"""Reading a rollouts.jsonl file once into a small index, then one transcript at a time by its byte offset.

A snapshot's files never change once written (the epoch folder appears by an atomic rename), so an index is
kept for as long as the file stays the same. The epoch page needs only the
summary of each line; the rollout page seeks to one line, so a multi-MB transcript is parsed only when opened.
Each line is read as a `RolloutRecord` of the run's format, like every other reader of rollouts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agenttrain.errors import UserError
from agenttrain.rundir.records import RolloutRecord
from agenttrain.untrusted import loads
from agenttrain.viewer.file_cache import FileCache


@dataclass(frozen=True)
class RolloutSummary:
    """What the rollouts table shows of one line, and where that line starts in the file."""

    line: int
    offset: int
    id: str
    correct: bool
    stop_reason: str | None
    turns: int
    calls: int
    failed_calls: int
    code_runs: int
    code_errors: int
    error: str | None
    extracted: str | None
    gold: str


def summarise_record(line: int, offset: int, record: RolloutRecord) -> RolloutSummary:
    return RolloutSummary(
        line=line, offset=offset, id=record.id, correct=record.correct, stop_reason=record.stop_reason,
        turns=record.turns, calls=len(record.function_calls),
        failed_calls=sum(1 for c in record.function_calls if not c.ok), code_runs=record.code_runs,
        code_errors=record.code_errors, error=record.error, extracted=record.extracted, gold=record.gold,
    )


class RolloutIndex:
    """The summaries of one rollouts.jsonl, in file order; a torn last line (a crash mid-write) is skipped."""

    def __init__(self, path: Path, version: int) -> None:
        self.path = path
        self.version = version  # the run's format, which each line is upgraded from
        self.rows: list[RolloutSummary] = []
        with open(path, "rb") as handle:
            offset = 0
            for raw in handle:
                try:
                    data = loads(raw)
                except json.JSONDecodeError:
                    data = None
                if data is not None:
                    self.rows.append(summarise_record(len(self.rows), offset, self._read(data)))
                offset += len(raw)
        self._by_id: dict[str, RolloutSummary] = {}
        for row in self.rows:
            self._by_id.setdefault(row.id, row)

    def _read(self, data: Any) -> RolloutRecord:
        return RolloutRecord.read(data, self.version, self.path)

    def find(self, task_id: str) -> RolloutSummary | None:
        return self._by_id.get(task_id)

    def record(self, row: RolloutSummary) -> RolloutRecord:
        """The whole line of one rollout, messages included, in the current format."""
        with open(self.path, "rb") as handle:
            handle.seek(row.offset)
            return self._read(loads(handle.readline()))


_INDEXES: FileCache[RolloutIndex] = FileCache()


def rollout_index(path: Path, version: int) -> RolloutIndex:
    """The index of `path` (a rollouts file of a run in format `version`), built again only when it changed."""
    try:
        return _INDEXES.get(path, lambda: RolloutIndex(path, version), version)
    except FileNotFoundError:
        raise UserError(f"{path}: missing; this snapshot's rollouts were deleted") from None
