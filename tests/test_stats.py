"""Bootstrap intervals and the exact McNemar test, against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from agenttrain.stats import bootstrap_ci, compare_outcomes, mcnemar_exact, paired_outcomes


def records(outcomes: dict[str, bool]) -> list[dict]:
    return [{"id": task, "correct": correct} for task, correct in outcomes.items()]


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


# -- bootstrap --------------------------------------------------------------------------------------------


def test_bootstrap_of_a_perfect_score_is_a_point():
    assert bootstrap_ci([True] * 12) == (1.0, 1.0)
    assert bootstrap_ci([False] * 12) == (0.0, 0.0)


def test_bootstrap_matches_the_normal_approximation_for_a_large_sample():
    # p = 0.5, n = 100: standard error 0.05, so a 95% interval of about 0.5 +- 1.96 * 0.05
    low, high = bootstrap_ci([True, False] * 50)
    half_width = 1.96 * math.sqrt(0.25 / 100)
    assert low == pytest.approx(0.5 - half_width, abs=0.015)
    assert high == pytest.approx(0.5 + half_width, abs=0.015)


def test_bootstrap_narrows_with_lower_confidence_and_more_tasks():
    outcomes = [True] * 14 + [False] * 6
    wide, narrow = bootstrap_ci(outcomes, confidence=0.95), bootstrap_ci(outcomes, confidence=0.5)
    assert wide[0] < narrow[0] <= 0.7 <= narrow[1] < wide[1]
    larger = bootstrap_ci(outcomes * 10)
    assert larger[1] - larger[0] < wide[1] - wide[0]


def test_bootstrap_is_reproducible_per_seed():
    outcomes = [True, False, True, True, False, True, False]
    assert bootstrap_ci(outcomes, seed=3) == bootstrap_ci(outcomes, seed=3)
    assert bootstrap_ci(outcomes, seed=3, resamples=50) != bootstrap_ci(outcomes, seed=4, resamples=50)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"outcomes": []}, "at least one"),
    ({"outcomes": [True], "confidence": 1.0}, "confidence"),
    ({"outcomes": [True], "resamples": 0}, "resamples"),
])
def test_bootstrap_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bootstrap_ci(**kwargs)
