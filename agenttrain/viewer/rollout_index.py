"""Reading a rollouts.jsonl file once into a small index, then one transcript at a time by its byte offset.

A snapshot's files never change once written (the epoch folder appears by an atomic rename), so an index is
kept for as long as the file's size and modification time stay the same. The epoch page needs only the
summary of each line; the rollout page seeks to one line, so a multi-MB transcript is parsed only when opened.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agenttrain.errors import UserError


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
    extracted: Any
    gold: Any

    def to_outcome(self) -> dict[str, Any]:
        """The shape `stats.paired_outcomes` pairs tasks by."""
        return {"id": self.id, "correct": self.correct}


def summarise_record(line: int, offset: int, record: dict[str, Any]) -> RolloutSummary:
    calls = record.get("function_calls") or []
    return RolloutSummary(
        line=line, offset=offset, id=str(record.get("id")), correct=bool(record.get("correct")),
        stop_reason=record.get("stop_reason"), turns=int(record.get("turns") or 0), calls=len(calls),
        failed_calls=sum(1 for c in calls if not c.get("ok")), code_runs=int(record.get("code_runs") or 0),
        code_errors=int(record.get("code_errors") or 0), error=record.get("error"),
        extracted=record.get("extracted"), gold=record.get("gold"),
    )


class RolloutIndex:
    """The summaries of one rollouts.jsonl, in file order; a torn last line (a crash mid-write) is skipped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[RolloutSummary] = []
        with open(path, "rb") as handle:
            offset = 0
            for raw in handle:
                try:
                    record = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    record = None
                if isinstance(record, dict):
                    self.rows.append(summarise_record(len(self.rows), offset, record))
                offset += len(raw)
        self._by_id: dict[str, RolloutSummary] = {}
        for row in self.rows:
            self._by_id.setdefault(row.id, row)

    def find(self, task_id: str) -> RolloutSummary | None:
        return self._by_id.get(task_id)

    def record(self, row: RolloutSummary) -> dict[str, Any]:
        """The whole line of one rollout, messages included."""
        with open(self.path, "rb") as handle:
            handle.seek(row.offset)
            return json.loads(handle.readline())


_CACHE: dict[Path, tuple[tuple[int, int], RolloutIndex]] = {}
_CACHE_LOCK = threading.Lock()


def rollout_index(path: Path) -> RolloutIndex:
    """The index of `path`, built again only when the file changed."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise UserError(f"{path}: missing; this snapshot's rollouts were deleted") from None
    key = (stat.st_size, stat.st_mtime_ns)
    with _CACHE_LOCK:
        cached = _CACHE.get(path)
    if cached and cached[0] == key:
        return cached[1]
    index = RolloutIndex(path)
    with _CACHE_LOCK:
        _CACHE[path] = (key, index)
    return index
