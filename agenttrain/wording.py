"""How counts and durations are written for people: `1 epoch`, `2 epochs`, `0:04:10`. On the ground floor, so that
every reader of runs (the console, `show`, the report, the viewer, a sweep's progress) words them the same way."""

from __future__ import annotations


def plural(count: int, noun: str, many: str | None = None) -> str:
    """`1 function`, `2 functions`; `many` for irregular nouns (retry, retries)."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"


def clock(seconds: float) -> str:
    """A duration as `H:MM:SS`."""
    seconds = int(max(0.0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
