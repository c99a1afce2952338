"""CPU cost of LLMClient.chat on the event-loop thread: real requests, cache misses and cache hits.

Runs against the fake server of the tests (its work happens in other threads, so `time.thread_time` on the
loop thread measures the client: our code, the openai SDK and the HTTP stack).
Run: .venv/bin/python bench/bench_llm.py
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support.fake_openai

from agenttrain.config import BudgetConfig, LLMConfig
from agenttrain.endpoint.cache import ResponseCache
from agenttrain.endpoint.client import LLMClient
from agenttrain.endpoint.usage import UsageMeter
from tests.support.fake_openai import FakeOpenAI

CALLS = 300
# a realistic conversation: a system prompt, a task and a few tool round trips (~6 KB of JSON)
MESSAGES = [
    {"role": "system", "content": "You are a careful assistant. " * 40},
    {"role": "user", "content": "Solve: what is the sum of the first 100 primes? " * 5},
    *[{"role": "assistant", "content": f"step {i}: " + "thinking " * 60} for i in range(4)],
]


async def measure(client: LLMClient, *, distinct: bool) -> tuple[float, float]:
    """Mean (wall ms, loop-thread CPU ms) per call, calls made one after another."""
    wall, cpu = time.perf_counter(), time.thread_time()
    for i in range(CALLS):
        question = [*MESSAGES, {"role": "user", "content": f"question {i if distinct else 0}"}]
        await client.chat(question, model="gpt-4o-mini")
    return (time.perf_counter() - wall) * 1000 / CALLS, (time.thread_time() - cpu) * 1000 / CALLS


async def main() -> None:
    with FakeOpenAI(lambda body: "ok") as server, tempfile.TemporaryDirectory() as folder:
        settings = LLMConfig(base_url=server.base_url)
        meter = UsageMeter(BudgetConfig(), {})
        plain = LLMClient(settings, role="agent", meter=meter, cache=None)
        cached = LLMClient(settings, role="agent", meter=meter, cache=ResponseCache(Path(folder)))
        await measure(plain, distinct=True)  # warm up connections and imports
        rows = [
            ("request, no cache", await measure(plain, distinct=True)),
            ("request, cache miss + write", await measure(cached, distinct=True)),
            ("cache hit", await measure(cached, distinct=True)),
        ]
        for client in (plain, cached):
            await client.close()
    print(f"{'per call':30} {'wall ms':>8} {'cpu ms':>8}   ({CALLS} sequential calls, ~6 KB messages)")
    for name, (wall_ms, cpu_ms) in rows:
        print(f"{name:30} {wall_ms:8.3f} {cpu_ms:8.3f}")


if __name__ == "__main__":
    asyncio.run(main())
