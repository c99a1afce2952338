"""MATH scoring: Hendrycks' extraction and equivalence, math-verify's leniency, and the real test set."""

from __future__ import annotations

import json
import random

import pytest

from agenttrain.scorers import judge, judge_many
from agenttrain.scorers.extraction import last_boxed_content, last_boxed_only_string
from agenttrain.scorers.hendrycks import is_equiv
from tests.support.files import shared_data

# SCORERS.md 1b, the table verified against the original code.
HENDRYCKS_TABLE = [
    ("0.5", "\\frac{1}{2}", True),
    ("\\frac12", "\\frac{1}{2}", True),
    ("1/2", "\\dfrac{1}{2}", True),
    ("x=3", "3", True),
    ("90^\\circ", "90", True),
    ("5\\text{ cm}", "5", True),
    (".5", "0.5", True),
    ("10\\%", "10", True),
    ("(1,2)", "(1, 2)", True),
    ("\\sqrt2", "\\sqrt{2}", True),
    ("3.0", "3", False),
    ("2,000", "2000", False),
    ("\\boxed{3}", "3", False),
    ("5 \\mbox{cm}", "5", False),
    ("\\text{(B)}", "B", False),
    ("-\\frac{1}{2}", "\\frac{-1}{2}", False),
    ("abc=3", "3", False),
]


@pytest.mark.parametrize(("first", "second", "expected"), HENDRYCKS_TABLE)
def test_is_equiv_matches_the_verified_table(first: str, second: str, expected: bool):
    assert is_equiv(first, second) is expected


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", True),
        ("\\\\frac{1}{4}", "\\frac{1}{4}", True),  # a doubled backslash is undone (step 3)
        ("\\tfrac{3}{4}", "\\frac34", True),
        ("\\$ 12", "12", True),
        ("\\frac{72}1", "72", False),  # a braced numerator is never fixed
        ("1,2", "2,1", False),  # order matters
        ("5\\text{ cm}\\text{ m}", "5\\text{ cm}\\text{ m}", True),  # two unit markers: raw comparison
        ("5\\text{ cm}\\text{ m}", "5", False),
        ("\\sqrt", "\\sqrt", True),  # a trailing command cannot be normalized: raw comparison
        (None, None, True),
        ("3", None, False),
    ],
)
def test_is_equiv_edge_rules(first: str | None, second: str | None, expected: bool):
    assert is_equiv(first, second) is expected


@pytest.mark.parametrize(
    ("text", "boxed", "content"),
    [
        ("so $\\boxed{\\frac{1}{2}}$.", "\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{1} then \\boxed{\\{2, 3\\}}", "\\boxed{\\{2, 3\\}}", "\\{2, 3\\}"),
        ("\\fbox{7}", "\\fbox{7}", "7"),
        ("\\boxed{8} and \\fbox{7}", "\\boxed{8}", "8"),  # \fbox only counts when there is no \boxed
        ("$\\boxed 9$ is it", None, "9"),  # lm-eval's unbraced form, as a fallback
        ("\\boxed{4", None, None),  # never closed
        ("no box here", None, None),
    ],
)
def test_boxed_extraction(text: str, boxed: str | None, content: str | None):
    assert last_boxed_only_string(text) == boxed
    assert last_boxed_content(text) == content


def test_the_unbraced_fallback_never_beats_a_braced_box():
    assert last_boxed_content("First \\boxed 3$, then finally \\boxed{17}.") == "17"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("prediction", "answer", "correct", "strict"),
    [
        ("Thus $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}", True, True),
        ("\\boxed{0.5}", "\\frac{1}{2}", True, True),
        ("\\boxed{3.0}", "3", True, False),  # math-verify: equal numbers
        ("\\boxed{2,000}", "2000", True, False),
        ("\\boxed{\\frac{2}{4}}", "\\frac{1}{2}", True, False),
        ("\\boxed{(-\\infty, 3]}", "(-\\infty,3]", True, True),
        ("\\boxed{x^2+2x+1}", "(x+1)^2", True, False),
        ("\\boxed{2}", "3", False, False),
        ("\\boxed{(2, 1)}", "(1, 2)", False, False),  # tuples are ordered
        ("\\boxed{[0, 3)}", "[0, 3]", False, False),  # interval ends matter
        ("I think it is 3", "3", False, False),  # no box: the whole reply is the answer
        ("3", "3", True, True),
    ],
)
def test_math_judge(prediction: str, answer: str, correct: bool, strict: bool):
    verdict = judge("math", prediction, answer)
    assert (verdict.correct, verdict.strict) == (correct, strict)


def test_math_judge_reports_what_it_extracted():
    assert judge("math", "Hence \\boxed{\\dfrac{3}{4}}. Done.", "\\frac34").extracted == "\\dfrac{3}{4}"
    assert judge("math", None, "3").extracted is None


@pytest.mark.slow
def test_every_gold_solution_is_judged_equal_to_its_own_answer():
    records = [json.loads(line) for line in shared_data("math/test.jsonl").read_text().splitlines()]
    verdicts = judge_many("math", [{"prediction": r["solution"], "answer": r["answer"]} for r in records])
    misses = [r["unique_id"] for r, v in zip(records, verdicts, strict=True) if not v.correct]
    assert len(records) == 5000
    assert misses == []


@pytest.mark.slow
def test_a_solution_is_rarely_judged_equal_to_another_problems_answer():
    records = [json.loads(line) for line in shared_data("math/test.jsonl").read_text().splitlines()]
    picks = random.Random(0).sample(range(len(records)), 600)
    items = [{"prediction": records[i]["solution"], "answer": records[(i + 1) % 5000]["answer"]} for i in picks]
    verdicts = judge_many("math", items)
    # Neighbours can share an answer ("2", "120" vs "120^\circ"); those are the only matches expected.
    unexpected = [
        (item["answer"], verdict.extracted)
        for item, verdict in zip(items, verdicts, strict=True)
        if verdict.correct and not is_equiv(verdict.extracted, item["answer"])
    ]
    assert sum(v.correct for v in verdicts) < 0.03 * len(items)
    assert all(v.note is None for v in verdicts)
    assert len(unexpected) <= 2
