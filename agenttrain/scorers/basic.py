"""Generic scorers for user datasets: `numeric` (relative tolerance) and `exact` (string identity).

Both read the answer behind `FINAL ANSWER:` if present, else inside the last `\\boxed{}`, else the whole
reply. `exact` is case-sensitive and ignores only surrounding whitespace (use the `gaia` scorer for a
case- and punctuation-blind comparison). `numeric` falls back to `exact` when the gold is not a number.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from agenttrain.registry import scorers
from agenttrain.scorers.extraction import marked_answer
from agenttrain.scorers.verdict import Verdict

RELATIVE_TOLERANCE = 1e-6
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?")
_FRACTION = re.compile(r"([+-]?\d+)\s*/\s*(\d+)")


def extract_answer(prediction: str | None) -> str | None:
    """The answer behind `FINAL ANSWER:`, else in the last box, else the whole reply, stripped."""
    if prediction is None:
        return None
    marked = marked_answer(prediction)
    return (marked if marked is not None else prediction).strip()


def parse_number(text: str) -> float | None:
    """A number written as `1,234.5`, `$12`, `45%`, `1e-3` or `3/4`; None for anything else."""
    text = text.strip().replace("$", "").replace("%", "").strip()
    if _THOUSANDS.fullmatch(text):
        text = text.replace(",", "")
    if fraction := _FRACTION.fullmatch(text):
        denominator = int(fraction[2])
        return float(Fraction(int(fraction[1]), denominator)) if denominator else None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@scorers.register("exact")
def judge_exact(prediction: str | None, answer: str, fields: Mapping[str, Any]) -> Verdict:
    extracted = extract_answer(prediction)
    return Verdict(correct=extracted is not None and extracted == answer.strip(), extracted=extracted)


@scorers.register("numeric")
def judge_numeric(prediction: str | None, answer: str, fields: Mapping[str, Any]) -> Verdict:
    gold = parse_number(answer)
    if gold is None:
        verdict = judge_exact(prediction, answer, fields)
        return Verdict(verdict.correct, verdict.extracted, note="gold answer is not a number; compared as text")
    extracted = extract_answer(prediction)
    value = parse_number(extracted) if extracted is not None else None
    correct = value is not None and math.isclose(value, gold, rel_tol=RELATIVE_TOLERANCE)
    return Verdict(correct=correct, extracted=extracted)
