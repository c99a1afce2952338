"""The MATH scorer: the last `\\boxed{}` answer, judged by math-verify OR Hendrycks' `is_equiv`.

`strict` is Hendrycks' string equivalence alone (the number papers report); `correct` also accepts what
math-verify proves equal (e.g. `3.0` vs `3`, `2,000` vs `2000`). math-verify's own timeouts rely on
`signal.alarm`, which fails off the main thread, so they are disabled here; the runners in
`agenttrain.scorers.runner` enforce a per-item time limit in worker processes instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from agenttrain.registry import scorers
from agenttrain.scorers.extraction import last_boxed_content
from agenttrain.scorers.hendrycks import is_equiv
from agenttrain.scorers.verdict import Verdict

# math-verify warns once per process that its timeouts are off; they are off on purpose (see above).
for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).setLevel(logging.ERROR)


@lru_cache(maxsize=4096)
def _parse_boxed(answer: str) -> tuple[Any, ...]:
    """math-verify's reading of a bare answer; boxing it makes the LaTeX extractor take it whole."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse  # heavy (sympy): only when scoring

    extraction = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())
    return tuple(parse("\\boxed{" + answer + "}", extraction_config=extraction, parsing_timeout=None))


def math_verify_equal(gold: str, predicted: str) -> bool:
    from math_verify import verify

    gold_parsed, predicted_parsed = _parse_boxed(gold), _parse_boxed(predicted)
    if not gold_parsed or not predicted_parsed:
        return False
    return bool(verify(list(gold_parsed), list(predicted_parsed), timeout_seconds=None))


@scorers.register("math")
def judge(prediction: str | None, answer: str, fields: Mapping[str, Any]) -> Verdict:
    if prediction is None:
        return Verdict(correct=False, extracted=None, strict=False)
    boxed = last_boxed_content(prediction)
    extracted = boxed if boxed is not None else prediction.strip()
    strict = is_equiv(extracted, answer)
    correct = strict or math_verify_equal(answer, extracted)
    return Verdict(correct=correct, extracted=extracted, strict=strict)
