"""The generic `numeric` and `exact` scorers for user datasets."""

from __future__ import annotations

import pytest

from agenttrain.scorers import judge
from agenttrain.scorers.basic import parse_number


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("42", 42.0),
        ("-3.5", -3.5),
        ("1,234,567.25", 1234567.25),
        ("$1,000", 1000.0),
        ("12.5%", 12.5),
        ("1e-3", 0.001),
        ("3/4", 0.75),
        ("-7 / 2", -3.5),
        ("1,2", None),  # not a thousands separator: a list
        ("12,34", None),
        ("3/0", None),
        ("nan", None),
        ("inf", None),
        ("five", None),
        ("", None),
    ],
)
def test_parse_number(text: str, value: float | None):
    assert parse_number(text) == value


@pytest.mark.parametrize(
    ("prediction", "answer", "correct"),
    [
        ("FINAL ANSWER: 3.0000001", "3", True),  # within the 1e-6 relative tolerance
        ("FINAL ANSWER: 3.0001", "3", False),
        ("FINAL ANSWER: $1,234", "1234", True),
        ("so \\boxed{0.25}", "1/4", True),
        ("\\boxed{7} but FINAL ANSWER: 8", "8", True),  # the marker wins over the box
        ("2500000", "2.5e6", True),  # no marker: the whole reply
        ("about 12", "12", False),
        ("FINAL ANSWER: 0", "0", True),
        ("FINAL ANSWER: 1e-9", "0", False),
    ],
)
def test_numeric(prediction: str, answer: str, correct: bool):
    assert judge("numeric", prediction, answer).correct is correct


def test_numeric_with_a_non_numeric_gold_compares_text_and_says_so():
    verdict = judge("numeric", "FINAL ANSWER: blue", "blue")
    assert verdict.correct
    assert verdict.note is not None and "not a number" in verdict.note


@pytest.mark.parametrize(
    ("prediction", "answer", "correct"),
    [
        ("FINAL ANSWER:   Paris  ", "Paris", True),
        ("FINAL ANSWER: paris", "Paris", False),  # case-sensitive
        ("FINAL ANSWER: Paris.", "Paris", False),
        ("\\boxed{B}", "B", True),
        ("B", " B ", True),
        (None, "B", False),
    ],
)
def test_exact(prediction: str | None, answer: str, correct: bool):
    assert judge("exact", prediction, answer).correct is correct
