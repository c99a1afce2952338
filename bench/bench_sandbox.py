"""Per-call cost of the sandbox's warm pool versus a fresh `python -c "import sympy; ..."` per call.

    .venv/bin/python bench/bench_sandbox.py [calls]

Prints the median wall time of: a learned-function call and a short code block in an open session, a whole
session (take a warm worker, set it up, one call, tear down), and a fresh interpreter per call.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

from agenttrain.config import SandboxConfig
from agenttrain.functions import Function, FunctionSet
from agenttrain.sandbox import Sandbox

EXPRESSION = "2 + 2"
FUNCTIONS = FunctionSet(
    (
        Function(
            "evaluate_expression",
            "Evaluate a math expression exactly.",
            {"type": "object", "properties": {"expression": {"type": "string"}}},
            "import sympy\n\ndef evaluate_expression(expression):\n    return sympy.sympify(expression)\n",
        ),
    )
)


async def median_s(action: Callable[[], Awaitable[object]], calls: int, pause_s: float = 0.0) -> float:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        await action()
        times.append(time.perf_counter() - started)
        await asyncio.sleep(pause_s)
    return statistics.median(times)


def fresh_interpreter() -> None:
    code = f"import sympy; print(sympy.sympify({EXPRESSION!r}))"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


async def main(calls: int) -> None:
    sandbox = Sandbox(SandboxConfig(warm_workers=2))
    await sandbox.start()
    try:
        async with sandbox.session(FUNCTIONS) as session:
            call = await median_s(
                lambda: session.call_function("evaluate_expression", {"expression": EXPRESSION}), calls
            )
            block = await median_s(
                lambda: session.run_code(f"import sympy\nprint(sympy.sympify({EXPRESSION!r}))"), calls
            )

        async def one_session() -> None:
            async with sandbox.session(FUNCTIONS) as session:
                await session.call_function("evaluate_expression", {"expression": EXPRESSION})

        # The pause stands for the model's turns between rollouts, during which the pool refills.
        whole_session = await median_s(one_session, max(3, calls // 10), pause_s=0.5)
    finally:
        await sandbox.close()
    fresh = await median_s(lambda: asyncio.to_thread(fresh_interpreter), max(3, calls // 10))

    print(f"{'median per call':<48}{'ms':>10}{'vs fresh':>10}")
    for label, seconds in [
        ("learned function call, warm session", call),
        ("short code block, warm session", block),
        ("whole session from the warm pool (1 call)", whole_session),
        ("fresh `python -c 'import sympy; ...'`", fresh),
    ]:
        print(f"{label:<48}{seconds * 1000:>10.2f}{fresh / seconds:>9.0f}x")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100))
