"""GAIA scoring: the leaderboard's `question_scorer` rules behind a `FINAL ANSWER:` marker."""

from __future__ import annotations

import pytest

from agenttrain.scorers import judge
from agenttrain.scorers.extraction import after_final_answer
from agenttrain.scorers.gaia import question_scorer

# SCORERS.md 3, the table verified against the official scorer.
VERIFIED = [
    ("42.0", "42", True),
    ("1e3", "1000", True),
    ("$1,000", "1000", True),
    ("17%", "17", True),
    ("1000 USD", "1000", False),
    ("seventeen", "17", False),
    ("10%", "0.1", False),
    ("Sea Gull", "seagull", True),
    ("Paris.", "Paris", True),
    ("Right.", "right", True),
    ("St. Petersburg", "Saint Petersburg", False),
    ("a; b; c", "a, b, c", True),
    ("a, b, c", "a,b,c", True),
    ("b, a, c", "a, b, c", False),
    ("1, 2", "1, 2, 3", False),
    ("3.0, x", "3, x", True),
    ("$5, 6%", "5, 6", True),
    ("Dr. Who, x", "Dr Who, x", False),
    ("1000", "1,000", False),
    (None, "None", True),
    ("right", "Right, left", False),
]


@pytest.mark.parametrize(("model_answer", "gold", "expected"), VERIFIED)
def test_question_scorer_matches_the_verified_table(model_answer: str | None, gold: str, expected: bool):
    assert question_scorer(model_answer, gold) is expected


@pytest.mark.parametrize(
    ("model_answer", "gold", "expected"),
    [
        (" 42 ", "42", True),  # float() ignores surrounding spaces
        ("42.000001", "42", False),  # numbers compare exactly
        ("New-York", "New York", True),  # string mode drops punctuation
        ("Müller", "muller", False),  # no accent folding
        ("x;y", "x, y", True),
        ("1,2,3", "1; 2; 3", True),
    ],
)
def test_question_scorer_edge_rules(model_answer: str, gold: str, expected: bool):
    assert question_scorer(model_answer, gold) is expected


@pytest.mark.parametrize(
    ("reply", "answer"),
    [
        ("Reasoning...\nFINAL ANSWER: Paris", "Paris"),
        ("final answer: Paris", "Paris"),  # any capitalisation, as the agents detect the marker
        ("**FINAL ANSWER:** 42", "42"),  # markdown emphasis
        ("**FINAL ANSWER: 42**", "42"),
        ("FINAL ANSWER: 42\n\nTERMINATE", "42"),  # only the answer's line
        ("FINAL ANSWER:\n\n  a, b \nbecause ...", "a, b"),  # the marker alone on its line
        ("FINAL ANSWER:", ""),
        ("The answer is 42", None),
    ],
)
def test_the_final_answer_is_the_line_after_the_marker(reply: str, answer: str | None):
    assert after_final_answer(reply) == answer


def test_judge_reads_the_text_after_the_last_final_answer():
    reply = "FINAL ANSWER: 12 was my first guess.\nChecking again...\nFINAL ANSWER: 14"
    verdict = judge("gaia", reply, "14")
    assert (verdict.correct, verdict.extracted) == (True, "14")


def test_judge_takes_a_reply_without_marker_whole():
    assert judge("gaia", "  Saint Petersburg \n", "saint petersburg").correct
    assert not judge("gaia", "I believe it is Paris", "Paris").correct
