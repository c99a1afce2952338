"""The GAIA scorer: the text after the last `FINAL ANSWER:`, judged by the leaderboard's `question_scorer`.

Rules (SCORERS.md 3): a gold that `float()` accepts is compared as an exact float after deleting `$`, `%`
and `,` from the answer; a gold containing `,` or `;` is compared element by element (numbers as numbers,
text without whitespace and case but WITH punctuation); any other gold is compared without whitespace,
case and ASCII punctuation.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

from agenttrain.registry import scorers
from agenttrain.scorers.extraction import after_final_answer
from agenttrain.scorers.verdict import Verdict

_LIST_SEPARATORS = re.compile(r"[,;]")
_DROP_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def normalize_number(text: str) -> float:
    """The answer as a number, or infinity (which equals no finite gold) when it is not one."""
    for symbol in "$%,":
        text = text.replace(symbol, "")
    try:
        return float(text)
    except ValueError:
        return float("inf")


def normalize_text(text: str, *, remove_punctuation: bool = True) -> str:
    text = re.sub(r"\s", "", text).lower()
    return text.translate(_DROP_PUNCTUATION) if remove_punctuation else text


def _element_matches(answer: str, gold: str) -> bool:
    if _is_float(gold):
        return normalize_number(answer) == float(gold)
    return normalize_text(answer, remove_punctuation=False) == normalize_text(gold, remove_punctuation=False)


def question_scorer(model_answer: str | None, ground_truth: str) -> bool:
    answer = "None" if model_answer is None else model_answer
    if _is_float(ground_truth):
        return normalize_number(answer) == float(ground_truth)
    if _LIST_SEPARATORS.search(ground_truth):
        gold_elements = _LIST_SEPARATORS.split(ground_truth)
        answer_elements = _LIST_SEPARATORS.split(answer)
        return len(gold_elements) == len(answer_elements) and all(
            _element_matches(a, g) for a, g in zip(answer_elements, gold_elements, strict=True)
        )
    return normalize_text(answer) == normalize_text(ground_truth)


@scorers.register("gaia")
def judge(prediction: str | None, answer: str, fields: Mapping[str, Any]) -> Verdict:
    if prediction is None:
        extracted = None
    else:
        marked = after_final_answer(prediction)
        extracted = marked if marked is not None else prediction.strip()
    return Verdict(correct=question_scorer(extracted, answer), extracted=extracted)
