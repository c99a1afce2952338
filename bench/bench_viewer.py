"""How fast `agenttrain view` shows each page of a large run: 4 epochs of 200 rollouts and a 1 MB transcript.

    .venv/bin/python bench/bench_viewer.py [rollouts per epoch, default 200]

Builds the run with the real RunDir API (tests/run_factory.py), serves it on a loopback port from a thread,
and fetches every page twice over HTTP: the first request reads the files cold (the epoch's rollout index is
built then), the second finds the index built. Where Chromium and Playwright are installed (the browser tests'
setup) it also times each page in the browser, from navigation to the load event, so layout of a large page
counts too. Prints milliseconds and page size per page; the target is under a second each.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.*

from agenttrain.rundir.directory import RunDir
from agenttrain.rundir.records import Best
from agenttrain.viewer import start
from tests.support.run_factory import DIVIDE, MULTIPLY, SQUARE, experiment, rollout, save_epoch, save_eval, usage

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TASKS = 200
BIG_TASK = "t007"
SYSTEM = "You are a helpful assistant that solves problems step by step, using Python. " * 20


def rollouts_per_epoch() -> int:
    return int(sys.argv[1]) if len(sys.argv) > 1 else TASKS


def messages(task: str, tool_rounds: int) -> list[dict[str, Any]]:
    """A function-calling conversation of about 5 KB."""
    conversation: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM},
                                          {"role": "user", "content": f"Question of {task}? " * 10}]
    for n in range(tool_rounds):
        conversation.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": f"c{n}", "type": "function", "function": {"name": "multiply", "arguments": '{"a": 6, "b": 7}'}}]})
        conversation.append({"role": "tool", "tool_call_id": f"c{n}", "name": "multiply", "content": "42"})
    conversation.append({"role": "assistant", "content": "Reasoning about the result. " * 20 + "\\boxed{42}"})
    return conversation


def megabyte_transcript() -> list[dict[str, Any]]:
    """About 1 MB: 30 code blocks, each answered by 32 KB of sandbox output."""
    conversation: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM},
                                          {"role": "user", "content": "A long task?"}]
    for n in range(30):
        code = f"for i in range(2000):\n    print(i, i * {n}, '<tag>')\n"
        conversation.append({"role": "assistant", "content": f"Step {n}.\n```python\n{code}```"})
        conversation.append({"role": "user", "content": "".join(f"{i} {i * n} <tag>\n" for i in range(2600))})
    return conversation


def records(epoch: int) -> list[dict[str, Any]]:
    made = []
    for i in range(rollouts_per_epoch()):
        task = f"t{i:03}"
        record = rollout(task, (i + epoch) % 3 != 0, [("multiply", True)] * (1 + i % 3))
        record["messages"] = megabyte_transcript() if task == BIG_TASK else messages(task, 1 + i % 3)
        made.append(record)
    return made


def build_run(folder: Path) -> RunDir:
    run = RunDir.create(experiment(folder, "bench"))
    sets = [[], [MULTIPLY], [MULTIPLY, SQUARE], [MULTIPLY, DIVIDE]]
    for epoch, (functions, status) in enumerate(zip(sets, ["baseline", "accepted", "rolled_back", "accepted"],
                                                    strict=True)):
        save_epoch(run, epoch, functions, status, records(epoch), 0.6, spent=usage(50_000, 5_000))
    run.set_best(Best(epoch=3, train_accuracy=0.67, reason="highest training accuracy among accepted epochs"))
    run.finish("finished", reason="ran 3 epochs", usage=usage(200_000, 20_000))
    for epoch in (0, 3):
        save_eval(run, "test", epoch, {f"q{i}": (i + epoch) % 2 == 0 for i in range(rollouts_per_epoch())})
    return run


def fetch(url: str) -> tuple[float, int]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        size = len(response.read())
    return time.perf_counter() - started, size


def browser_timer() -> Any:
    """A function timing one page load in headless Chromium, or None when the browser is not installed."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not Path(CHROMIUM).exists():
        return None
    playwright = sync_playwright().start()
    tab = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS).new_page()

    def load(url: str) -> float:
        started = time.perf_counter()
        tab.goto(url, wait_until="load")
        return time.perf_counter() - started

    return load


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run = build_run(Path(tmp))
        transcript = (run.path / "epoch-3" / "rollouts.jsonl").stat().st_size
        print(f"run: 4 epochs x {rollouts_per_epoch()} rollouts, epoch-3/rollouts.jsonl {transcript / 1e6:.1f} MB "
              f"(task {BIG_TASK}'s transcript about 1 MB)")
        server = start(run.path.parent, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
        base = f"{server.url}/runs/{run.path.name}"
        pages = [
            ("runs list", f"{server.url}/"),
            ("run", f"{base}/"),
            ("epoch (all rollouts, page 1)", f"{base}/epochs/3"),
            ("epoch (flipped)", f"{base}/epochs/3?filter=flipped"),
            ("rollout (5 KB transcript)", f"{base}/epochs/3/tasks/t001"),
            ("rollout (1 MB transcript)", f"{base}/epochs/3/tasks/{BIG_TASK}"),
            ("diff 2 -> 3", f"{base}/diff?a=2&b=3"),
            ("side by side (1 MB + 1 MB)", f"{base}/compare/{BIG_TASK}?a=2&b=3"),
        ]
        load = browser_timer()
        print(f"{'page':<30} {'cold ms':>8} {'warm ms':>8} {'browser ms':>11} {'KB':>7}")
        slowest = 0.0
        for label, url in pages:
            cold, size = fetch(url)
            warm, _ = fetch(url)
            shown = load(url) if load else None
            slowest = max(slowest, cold, warm, shown or 0.0)
            in_browser = f"{1000 * shown:11.0f}" if shown is not None else f"{'–':>11}"
            print(f"{label:<30} {1000 * cold:8.0f} {1000 * warm:8.0f} {in_browser} {size / 1000:7.0f}")
        server.shutdown()
        if load is None:
            print("browser column empty: Chromium (/usr/bin/chromium) or Playwright not installed")
        print(f"slowest page: {1000 * slowest:.0f} ms (target: under 1000 ms)")


if __name__ == "__main__":
    main()
