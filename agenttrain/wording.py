"""How counts are written for people: `1 epoch`, `2 epochs`. On the ground floor, so that every reader of runs (the
console, `show`, the report, the viewer) words them the same way."""

from __future__ import annotations


def plural(count: int, noun: str, many: str | None = None) -> str:
    """`1 function`, `2 functions`; `many` for irregular nouns (retry, retries)."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"
