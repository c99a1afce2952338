"""Running scorers in worker processes: order, time limits, concurrency, and bad scorer names."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agenttrain.errors import UserError
from agenttrain.registry import scorers
from agenttrain.scorers import JudgePool, judge, judge_async, judge_many
from agenttrain.scorers.runner import TEMPLATE_ENV, start_template
from tests.support.files import child_processes

# sympy tries to evaluate this tower of powers and never finishes: a real hostile answer, no fake needed
HOSTILE = "\\boxed{9^{9^{9^{9}}}}"

ITEMS = [
    {"prediction": "\\boxed{\\frac{1}{2}}", "answer": "0.5"},
    {"prediction": "\\boxed{4}", "answer": "5"},
    {"prediction": "\\boxed{3.0}", "answer": "3"},
    {"prediction": "\\boxed{x}", "answer": "y"},
]


@pytest.mark.slow
def test_judge_many_returns_verdicts_in_input_order():
    verdicts = judge_many("math", ITEMS * 5, workers=2)
    assert verdicts == [judge("math", item["prediction"], item["answer"]) for item in ITEMS * 5]
    assert [v.correct for v in verdicts[:4]] == [True, False, True, False]


def test_judge_many_passes_choices_and_unit():
    items = [
        {"prediction": "FINAL ANSWER: B", "answer": "no", "choices": ["yes", "no"]},
        {"prediction": "FINAL ANSWER: 12 minutes", "answer": "12", "unit": "minutes"},
    ]
    assert [v.correct for v in judge_many("tabmwp", items)] == [True, True]


@pytest.mark.slow
def test_a_hostile_answer_times_out_and_the_next_items_are_still_judged():
    items = [{"prediction": HOSTILE, "answer": "3"}, *ITEMS]
    started = time.monotonic()
    verdicts = judge_many("math", items, timeout_s=1.0, workers=1)
    assert time.monotonic() - started < 15
    assert verdicts[0].correct is False
    assert verdicts[0].note == "scorer timed out after 1s"
    assert [v.correct for v in verdicts[1:]] == [True, False, True, False]


def scorer_templates() -> set[int]:
    """The pids of this process's scorer templates (the processes its workers are forked from)."""
    return child_processes(b"serve_template")


@pytest.mark.slow
def test_workers_share_one_template_which_is_replaced_when_killed():
    """A pool of workers costs one set of imports; when the OOM killer takes the template, judging goes on."""
    jobs = [("math", item["prediction"], item["answer"], {}) for item in ITEMS] * 2
    others = scorer_templates()  # the shared pool's, which other tests use
    with JudgePool(2) as pool:
        assert [v.correct for v in pool.judge_all(jobs, 10.0)] == [True, False, True, False] * 2
        (template,) = scorer_templates() - others
        os.kill(template, signal.SIGKILL)
        # each hostile item costs its worker, so the next items need workers forked from a new template
        verdicts = pool.judge_all([("math", HOSTILE, "3", {})] * 2, 1.0)
        assert [v.note for v in verdicts] == ["scorer timed out after 1s"] * 2
        assert [v.correct for v in pool.judge_all(jobs, 10.0)] == [True, False, True, False] * 2
        (replacement,) = scorer_templates() - others
        assert replacement != template
    assert scorer_templates() == others  # closing the pool stops its template


CHILD_JUDGES = """
import asyncio, os, sys
from agenttrain.scorers.runner import TEMPLATE_ENV, _shared_pool, adopt_template, judge_async
adopt_template(int(os.environ[TEMPLATE_ENV]))
verdict = asyncio.run(judge_async("math", "\\\\boxed{3.0}", "3"))
print(verdict.correct, _shared_pool()._template._process is None)  # no template of its own
"""


@pytest.mark.slow
def test_a_child_process_forks_its_workers_from_the_template_its_parent_hands_down():
    """A sweep starts one scorer template for all its jobs: a job then starts none of its own."""
    others = scorer_templates()
    template = start_template("math")
    try:
        (pid,) = scorer_templates() - others
        child = subprocess.run([sys.executable, "-c", CHILD_JUDGES], capture_output=True, text=True, check=True,
                               env={**os.environ, TEMPLATE_ENV: str(template.control_fd)},
                               pass_fds=(template.control_fd,))
        assert child.stdout.split() == ["True", "True"]
        assert scorer_templates() - others == {pid}  # the child's workers came from it; it still serves
    finally:
        template.close()
    assert scorer_templates() == others


def children_of(parent: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.add(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue  # not a process, or one that just ended
    return found


@pytest.mark.slow
def test_a_warmed_pool_starts_its_template_and_workers_before_the_first_item():
    """What `train` does while it starts: the scorers' imports are paid before any item, at most once per worker
    the pool may use."""
    others = scorer_templates()
    with JudgePool(2) as pool:
        pool.warm("math", workers=16)
        deadline = time.monotonic() + 60
        while not (templates := scorer_templates() - others) or len(children_of(next(iter(templates)))) < 2:
            assert time.monotonic() < deadline, "the warmed pool did not start its template and two workers"
            time.sleep(0.05)
        assert [v.correct for v in pool.judge_all([("math", i["prediction"], i["answer"], {}) for i in ITEMS], 10.0)] \
            == [True, False, True, False]
        (template,) = templates
        assert len(children_of(template)) == 2  # the pool's size, not the 16 asked for
    assert scorer_templates() == others


@pytest.mark.slow
def test_judge_async_keeps_the_event_loop_free_and_never_hangs():
    async def main() -> tuple[list, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        ticking = asyncio.create_task(ticker())
        verdicts = await asyncio.gather(
            judge_async("math", HOSTILE, "3", timeout_s=1.0),
            *(judge_async("math", item["prediction"], item["answer"]) for item in ITEMS),
        )
        ticking.cancel()
        return verdicts, ticks

    verdicts, ticks = asyncio.run(main())
    assert verdicts[0].note == "scorer timed out after 1s"
    assert [v.correct for v in verdicts[1:]] == [True, False, True, False]
    assert ticks >= 10  # the loop kept running while the hostile item was being judged


def test_judge_works_off_the_main_thread():
    # math-verify's own timeouts use signal.alarm, which would raise here; ours are disabled in favour of processes
    with ThreadPoolExecutor(1) as threads:
        assert threads.submit(judge, "math", "\\boxed{3.0}", "3").result().correct


@pytest.mark.parametrize("scorer", ["Math", "f1", ""])
def test_unknown_scorers_are_refused_with_the_list_of_names(scorer: str):
    with pytest.raises(UserError, match=r"unknown scorer .*: (.* )?exact, gaia, (.* )?math, numeric, tabmwp"):
        judge(scorer, "1", "1")
    with pytest.raises(UserError, match="unknown scorer"):
        judge_many(scorer, [{"prediction": "1", "answer": "1"}])
    with pytest.raises(UserError, match="unknown scorer"):
        asyncio.run(judge_async(scorer, "1", "1"))
    assert scorer not in scorers.names()
