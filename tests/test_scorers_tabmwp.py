"""TabMWP scoring: PromptPG's extraction and normalization, checked against its own result file."""

from __future__ import annotations

import json

import pytest

from agenttrain.scorers import judge, judge_many
from agenttrain.scorers.tabmwp import extract_prediction, normalize_answer
from tests.support.files import shared_data

DAYS = ["Tuesday", "Wednesday", "Thursday", "Friday"]


# SCORERS.md 2, the tables verified against PromptPG's code.
@pytest.mark.parametrize(
    ("text", "unit", "normalized"),
    [
        ("1,000", None, "1000"),
        ("$56.40", None, "56.4"),
        ("3/4", None, "0.75"),
        ("2/3", None, "0.667"),
        ("-3.0", None, "-3"),
        ("10.", None, "10"),
        ("0.50", None, "0.5"),
        ("$1,234.5", None, "1234.5"),
        ("1.2345", None, "1.234"),
        ("12 minutes", "minutes", "12"),
        ("7:25 P.M.", None, "7:25 P.M"),
        ("3/0", None, "3/0"),  # malformed numbers stay text (PromptPG's run_gpt3_rl)
    ],
)
def test_normalize_answer(text: str, unit: str | None, normalized: str):
    assert normalize_answer(text, unit) == normalized


@pytest.mark.parametrize(
    ("output", "choices", "prediction"),
    [
        ("The answer is $\\frac{16}{95}$.", None, "16/95"),
        ("It will be 7:25 P.M.", None, "7:25"),
        ("(A) shortage", ["shortage", "surplus"], "shortage"),
        ("The answer is B", ["yes", "no"], "no"),
        ("So 3 + 4 = 7. The answer is 7.", None, "7"),
        ("the answer is 5", None, "5"),  # "[Th]he answer is" misses lowercase: the last number wins
        ("It takes 12 minutes, not 15 hours", None, "15"),
        ("The answer is (C) Friday", DAYS, "Thursday"),
        ("I would pick the surplus", ["shortage", "surplus"], "surplus"),  # word overlap
        ("The answer is Friday.", DAYS, "Friday"),  # read as letter F, past the options: word overlap
        ("The answer is F", DAYS, "Tuesday"),  # no overlap at all: the first option, as PromptPG does
    ],
)
def test_extract_prediction(output: str, choices: list[str] | None, prediction: str):
    assert extract_prediction(output, choices) == prediction


@pytest.mark.parametrize(
    ("reply", "answer", "fields", "correct"),
    [
        ("Counting rows...\nFINAL ANSWER: Friday", "Friday", {"choices": DAYS}, True),
        ("FINAL ANSWER: friday.", "Friday", {"choices": DAYS}, True),
        ("FINAL ANSWER: (B)", "Wednesday", {"choices": DAYS}, True),
        ("FINAL ANSWER: B", "Wednesday", {"choices": DAYS}, True),
        ("FINAL ANSWER: B. Wednesday", "Wednesday", {"choices": DAYS}, True),
        ("FINAL ANSWER: Al Gore", "Al Gore", {"choices": ["Bo Diddley", "Al Gore"]}, True),
        ("FINAL ANSWER: 7:25 P.M.", "7:25 P.M.", {}, True),
        ("FINAL ANSWER: $1,204.50", "1,204.5", {}, True),
        ("FINAL ANSWER: 12 minutes", "12", {"unit": "minutes"}, True),
        ("FINAL ANSWER: 2/3", "0.67", {}, False),  # three decimals, compared as text
        ("The total is \\boxed{45}", "45", {}, True),
        ("FINAL ANSWER: 44", "45", {}, False),
        ("The answer is 45.", "45", {}, True),  # PromptPG's own format, no marker
    ],
)
def test_judge(reply: str, answer: str, fields: dict, correct: bool):
    assert judge("tabmwp", reply, answer, fields).correct is correct


def _promptpg_results() -> dict[str, dict]:
    return json.loads(shared_data("tabmwp/scorer_fixtures/exp4_test_TQ-SA_2_seed_2.json").read_text())["results"]


def test_normalize_answer_reproduces_promptpgs_answer_norm():
    results = _promptpg_results()
    assert len(results) == 7686
    assert [pid for pid, r in results.items() if normalize_answer(r["answer"], None) != r["answer_norm"]] == []


def test_verdicts_agree_with_promptpgs_true_false():
    results = _promptpg_results()
    problems = json.loads(shared_data("tabmwp/problems_test1k.json").read_text())
    items = [
        {"prediction": results[pid]["output"], "answer": p["answer"], "choices": p["choices"], "unit": p["unit"]}
        for pid, p in problems.items()
    ]
    verdicts = judge_many("tabmwp", items)
    agreeing = sum(v.correct == results[pid]["true_false"] for pid, v in zip(problems, verdicts, strict=True))
    assert len(items) == 1000
    assert agreeing >= 990
