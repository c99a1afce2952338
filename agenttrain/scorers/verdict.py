"""The result every scorer returns."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    correct: bool
    extracted: str | None  # what the scorer's extraction took from the prediction
    strict: bool | None = None  # math only: Hendrycks' is_equiv alone (reported as accuracy_strict)
    note: str | None = None  # why a verdict is not a plain comparison, e.g. "scorer timed out after 10s"
