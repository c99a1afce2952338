"""Bootstrap intervals and the exact McNemar test, against values worked out by hand."""

from __future__ import annotations

import math
from typing import NamedTuple

import pytest

from agenttrain.stats import (
    compare_outcomes,
    mcnemar_exact,
    paired_difference_ci,
    paired_outcomes,
    wilson_interval,
)


def records(outcomes: dict[str, bool]) -> list[Verdict]:
    return [Verdict(task, correct) for task, correct in outcomes.items()]


class Verdict(NamedTuple):
    id: str
    correct: bool


# -- McNemar ----------------------------------------------------------------------------------------------


def test_mcnemar_all_flips_one_way():
    # 5 discordant pairs, all fixed: P(0 of 5) = 1/32 on each side, so p = 2/32
    assert mcnemar_exact(0, 5) == pytest.approx(0.0625)
    assert mcnemar_exact(5, 0) == pytest.approx(0.0625)


def test_mcnemar_balanced_flips_are_not_evidence():
    assert mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 0) == 1.0


def test_mcnemar_one_against_nine():
    # n = 10: P(X <= 1) = (1 + 10) / 1024, doubled
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)


def test_mcnemar_two_against_six():
    # n = 8: P(X <= 2) = (1 + 8 + 28) / 256 = 37/256, doubled
    assert mcnemar_exact(6, 2) == pytest.approx(74 / 256)


@pytest.mark.parametrize(("fixed", "broken"), [(0, 1), (1, 1), (2, 7), (7, 2), (10, 13), (25, 3)])
def test_mcnemar_equals_the_direct_binomial_sum(fixed, broken):
    n, smaller = fixed + broken, min(fixed, broken)
    direct = 2 * sum(math.comb(n, k) for k in range(smaller + 1)) / 2**n
    assert mcnemar_exact(fixed, broken) == pytest.approx(min(1.0, direct))


def test_mcnemar_stays_finite_for_large_counts():
    assert 0 < mcnemar_exact(400, 600) < 1e-9


def test_mcnemar_rejects_negative_counts():
    with pytest.raises(ValueError, match="negative"):
        mcnemar_exact(-1, 3)


# -- pairing records by task id ---------------------------------------------------------------------------


def test_compare_outcomes_pairs_by_id_and_ignores_unpaired_tasks():
    before = records({"a": False, "b": False, "c": True, "d": True, "only-before": False})
    after = records({"d": True, "c": False, "b": True, "a": True, "only-after": True})
    comparison = compare_outcomes(before, after)
    assert (comparison.paired, comparison.fixed, comparison.broken) == (4, 2, 1)
    assert comparison.p_value == pytest.approx(mcnemar_exact(2, 1))
    assert comparison.to_dict()["fixed"] == 2


def test_paired_outcomes_follow_the_second_lists_order():
    assert paired_outcomes(records({"x": True, "y": False}), records({"y": True, "x": True})) == [
        ("y", False, True),
        ("x", True, True),
    ]


# -- Wilson interval ------------------------------------------------------------------------------------


def test_a_perfect_score_on_twelve_tasks_is_not_a_certainty():
    low, high = wilson_interval(12, 12)
    assert low == pytest.approx(0.7575, abs=0.001) and high == 1.0
    low, high = wilson_interval(0, 12)
    assert low == 0.0 and high == pytest.approx(0.2425, abs=0.001)


def test_wilson_matches_the_normal_approximation_for_a_large_sample():
    # p = 0.5, n = 1000: the Wilson interval is almost the Wald one, 0.5 +- 1.96 * sqrt(0.25 / n)
    low, high = wilson_interval(500, 1000)
    half_width = 1.96 * math.sqrt(0.25 / 1000)
    assert low == pytest.approx(0.5 - half_width, abs=0.001)
    assert high == pytest.approx(0.5 + half_width, abs=0.001)


def test_wilson_narrows_with_lower_confidence_and_more_tasks():
    wide, narrow = wilson_interval(14, 20), wilson_interval(14, 20, confidence=0.5)
    assert wide[0] < narrow[0] <= 0.7 <= narrow[1] < wide[1]
    larger = wilson_interval(140, 200)
    assert larger[1] - larger[0] < wide[1] - wide[0]


@pytest.mark.parametrize(("args", "message"), [
    ((0, 0), "at least one"), ((5, 4), "between 0 and n"), ((1, 2, 1.0), "confidence"),
])
def test_wilson_rejects_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        wilson_interval(*args)


# -- paired bootstrap of a difference --------------------------------------------------------------------


def test_no_change_on_any_task_gives_a_zero_width_difference():
    assert paired_difference_ci([(True, True), (False, False)] * 6) == (0.0, 0.0)


def test_the_difference_interval_holds_the_observed_difference_and_shrinks_with_more_tasks():
    pairs = [(False, True)] * 6 + [(True, False)] * 2 + [(True, True)] * 8 + [(False, False)] * 4
    low, high = paired_difference_ci(pairs)
    assert -1 <= low < 0.2 < high <= 1
    larger = paired_difference_ci(pairs * 10)
    assert larger[1] - larger[0] < high - low
    # the normal approximation of the paired difference: var = (p_fixed + p_broken - d^2) / n
    half_width = 1.96 * math.sqrt((0.3 + 0.1 - 0.04) / 200)
    assert larger == pytest.approx((0.2 - half_width, 0.2 + half_width), abs=0.02)


def test_the_difference_interval_is_reproducible_per_seed():
    pairs = [(False, True), (True, False), (True, True), (False, True), (False, False)]
    assert paired_difference_ci(pairs, seed=3) == paired_difference_ci(pairs, seed=3)
    assert paired_difference_ci(pairs, seed=3, resamples=50) != paired_difference_ci(pairs, seed=4, resamples=50)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"pairs": []}, "at least one"),
    ({"pairs": [(True, True)], "confidence": 1.0}, "confidence"),
    ({"pairs": [(True, True)], "resamples": 0}, "resamples"),
])
def test_the_difference_interval_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        paired_difference_ci(**kwargs)


def test_a_comparison_reports_the_difference_and_its_interval():
    comparison = compare_outcomes(records({"a": False, "b": False, "c": True}), records({"a": True, "b": True,
                                                                                          "c": True}))
    assert comparison.difference == pytest.approx(2 / 3)
    low, high = comparison.difference_ci95
    assert 0 <= low <= 2 / 3 <= high <= 1
