"""Throughput of the MATH scorer on the 5,000 MATH test problems, through the process pool of `judge_many`.

    .venv/bin/python bench/bench_scoring.py [workers]

Two passes: every gold solution against its own answer (mostly settled by Hendrycks' string rules), then
against the next problem's answer (every item goes through math-verify: the costly case, close to scoring
wrong agent answers). Prints items/second and the agreement figures. Needs ../shared/data/math/test.jsonl.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from agenttrain.scorers import judge_many

MATH_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "math" / "test.jsonl"


def timed_pass(label: str, items: list[dict[str, str]], workers: int | None) -> None:
    started = time.perf_counter()
    verdicts = judge_many("math", items, workers=workers)
    seconds = time.perf_counter() - started
    correct = sum(v.correct for v in verdicts)
    strict = sum(bool(v.strict) for v in verdicts)
    timed_out = sum(v.note is not None for v in verdicts)
    print(
        f"{label:<28} {len(items)} items in {seconds:5.1f} s = {len(items) / seconds:6.0f} items/s; "
        f"correct {correct} ({100 * correct / len(items):.2f} %), strict {strict}, notes {timed_out}"
    )


def main() -> None:
    if not MATH_TEST.is_file():
        print(f"skipped: MATH test set not found at {MATH_TEST} (it lies beside the project's own checkout)")
        return
    workers = int(sys.argv[1]) if len(sys.argv) > 1 else None
    records = [json.loads(line) for line in MATH_TEST.read_text(encoding="utf-8").splitlines()]
    own = [{"prediction": r["solution"], "answer": r["answer"]} for r in records]
    shifted = [{"prediction": r["solution"], "answer": records[(i + 1) % len(records)]["answer"]}
               for i, r in enumerate(records)]
    print(f"MATH test set: {len(records)} problems, workers={workers or 'one per core'}")
    timed_pass("solution vs own answer", own, workers)
    timed_pass("solution vs next answer", shifted, workers)


if __name__ == "__main__":
    main()
