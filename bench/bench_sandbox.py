"""What a sandbox session costs: opening one to its first result (wall and CPU), 16 opened at once, and a
call in an open session, against a fresh `python -c "import sympy; ..."` per call.

    .venv/bin/python bench/bench_sandbox.py [sessions]

CPU is that of every process involved (this one, the fork server or spawned workers, their sessions), read
from a cgroup (see cpu_cgroup.py); a session's CPU includes refilling the warm pool behind it and its
teardown. Targets (2 cores): open to first result <= 25 ms wall and <= 30 ms CPU (median); 16 at once <= 0.5 s.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))  # for cpu_cgroup

from cpu_cgroup import CpuCgroup

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
AT_ONCE = 16
REFILL_PAUSE_S = 0.3  # stands for the model's turn between rollouts, during which the pool refills


async def first_result(sandbox: Sandbox) -> float:
    """Open a session, call a learned function, close it; returns the seconds from opening to the result."""
    started = time.perf_counter()
    async with sandbox.session(FUNCTIONS) as session:
        result = await session.call_function("evaluate_expression", {"expression": EXPRESSION})
        elapsed = time.perf_counter() - started
        assert result.value == "4", result
    return elapsed


async def session_costs(sandbox: Sandbox, cpu: CpuCgroup, sessions: int) -> tuple[list[float], list[float]]:
    """Wall time of each session to its first result, and the CPU of everything up to the next session (its
    teardown and the pool's refill included)."""
    walls, cpus = [], []
    for _ in range(sessions):
        cpu_before = cpu.cpu_s()
        walls.append(await first_result(sandbox))
        await asyncio.sleep(REFILL_PAUSE_S)
        cpus.append(cpu.cpu_s() - cpu_before)
    return walls, cpus


async def in_session_call_s(sandbox: Sandbox, calls: int) -> float:
    async with sandbox.session(FUNCTIONS) as session:
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            await session.call_function("evaluate_expression", {"expression": EXPRESSION})
            times.append(time.perf_counter() - started)
    return statistics.median(times)


async def at_once_s(sandbox: Sandbox) -> float:
    started = time.perf_counter()
    await asyncio.gather(*(first_result(sandbox) for _ in range(AT_ONCE)))
    return time.perf_counter() - started


def fresh_interpreter_s(runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        code = f"import sympy; print(sympy.sympify({EXPRESSION!r}))"
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def main(sessions: int) -> None:
    cpu = CpuCgroup(f"agenttrain-bench-sandbox-{id(main)}")
    cpu.join()
    sandbox = Sandbox(SandboxConfig())
    try:
        started = time.perf_counter()
        await sandbox.start()
        start_s = time.perf_counter() - started
        await first_result(sandbox)  # the first session also pays for lazy imports on our side
        walls, cpus = await session_costs(sandbox, cpu, sessions)
        await asyncio.sleep(1)  # a full pool again
        together = await at_once_s(sandbox)
        call = await in_session_call_s(sandbox, 50)
        start_method = sandbox.describe().get("start", {}).get("method", "spawn per worker")
    finally:
        await sandbox.close()
        cpu.close()
    fresh = fresh_interpreter_s(5)
    rows = [
        ("sandbox start (template or warm pool)", f"{start_s * 1000:.0f} ms", ""),
        ("session open to first result, median wall", f"{statistics.median(walls) * 1000:.1f} ms", "<= 25 ms"),
        ("session open to first result, median CPU", f"{statistics.median(cpus) * 1000:.1f} ms", "<= 30 ms"),
        (f"{AT_ONCE} sessions opened at once, wall", f"{together:.2f} s", "<= 0.5 s"),
        ("learned-function call in an open session", f"{call * 1000:.2f} ms", ""),
        ("fresh `python -c 'import sympy; ...'`", f"{fresh * 1000:.0f} ms", ""),
    ]
    print(f"sessions started by: {start_method}; CPU from: {cpu.how}; {sessions} sessions, one at a time")
    print(f"{'':46} {'measured':>10}  target")
    for name, value, target in rows:
        print(f"{name:46} {value:>10}  {target}".rstrip())


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 30))
