"""Make docs/example-run/: a small, complete training run that shows what success looks like, with no API key.

The training loop, the sandbox that runs the learned function, the scorer, the run folder, `eval` and `report` are
agenttrain's own; only the two LLMs are scripted (the tests' fake OpenAI-compatible server, tests/support/), and
the run says so: its models are called `scripted-agent` and `scripted-optimizer`, and its run.json has an
`example` field. The task, counting the days between two dates, is written here.

The script: the agent counts days by hand (30-day months) unless it is offered `days_between`, which it then calls
with the two dates of the question and answers with what the function returned in the sandbox. One question names
its first date in words, which the agent cannot read: it stays wrong. The optimizer first sends a function whose
code defines another name (refused, and sent again renamed), an off-by-one version (applied, evaluated, rolled
back); shown the rolled-back list, it sends a correct one (accepted); then a revision that imports a package the
sandbox does not have, refused at every attempt (a rejected action); then it says TERMINATE. The prompt limit is
low enough that the optimizer's prompt leaves conversations out, as a long run's does.

    make example-run        # or: .venv/bin/python tools/make_example_run.py [OUT_FOLDER]
"""

from __future__ import annotations

import datetime
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from tests.support.fake_openai import FakeOpenAI, Reply, tool_call  # noqa: E402
from tests.support.scripted import (  # noqa: E402
    TERMINATE,
    function_payload,
    list_a,
    list_b,
    offered_tools,
    question,
    tool_results,
)

OUT = ROOT / "docs" / "example-run"
NAME = "example-days"
CLI = [sys.executable, "-c", "from agenttrain.cli import main; main()"]
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
PAIRS = [("2024-01-03", "2024-01-28"), ("2024-02-10", "2024-04-02"), ("2023-11-20", "2024-01-05"),
         ("2024-05-01", "2024-05-31"), ("2024-06-15", "2024-09-01"), ("2023-12-24", "2024-03-01"),
         ("2024-07-04", "2024-07-19"), ("2024-02-01", "2024-03-01"), ("2024-08-30", "2024-12-25"),
         ("2024-03-10", "2024-06-10"), ("2023-10-01", "2023-10-31"), ("2024-09-09", "2025-01-01")]
ARGUMENTS = {"start": {"type": "string", "description": "first date, YYYY-MM-DD"},
             "end": {"type": "string", "description": "second date, YYYY-MM-DD"}}
CORRECT = ("def days_between(start, end):\n    from datetime import date\n"
           "    return (date.fromisoformat(end) - date.fromisoformat(start)).days\n")
OFF_BY_ONE = ("def days_between(start, end):\n    from datetime import date\n"
              "    # count both ends\n    return (date.fromisoformat(end) - date.fromisoformat(start)).days + 1\n")
WRONG_NAME = CORRECT.replace("def days_between", "def day_count")
WORDS = ("def days_between(start, end):\n    import dateparser\n"
         "    first, last = dateparser.parse(start).date(), dateparser.parse(end).date()\n"
         "    return (last - first).days\n")
REVISIONS = {"asked": 0}  # the optimizer's fresh calls once the set has the function: the script's one state


def examples() -> list[dict[str, str]]:
    rows = [{"id": f"d{i:02d}", "question": f"How many days are there from {a} to {b}?",
             "answer": str((datetime.date.fromisoformat(b) - datetime.date.fromisoformat(a)).days)}
            for i, (a, b) in enumerate(PAIRS, start=1)]
    rows.append({"id": "d13", "question": "How many days are there from New Year's Day 2024 to 2024-02-10?",
                 "answer": "40"})
    return rows


def by_hand(start: str, end: str) -> Reply:
    """The agent's own count without a function: every month 30 days, the way a hurried reader counts."""
    (y1, m1, d1), (y2, m2, d2) = (map(int, d.split("-")) for d in (start, end))
    years, months, days = y2 - y1, m2 - m1, d2 - d1
    total = years * 360 + months * 30 + days
    return Reply(content=f"I will count without code. From {start} to {end} there are {years} years, {months} months "
                         f"and {days} days between the two dates. Taking a year as 360 days and a month as 30 days, "
                         f"which is close enough, that is {years} x 360 + {months} x 30 + {days} = {total} days.\n\n"
                         f"The answer is \\boxed{{{total}}}.")


def agent(body: dict[str, Any]) -> Reply:
    results = tool_results(body)
    if results:
        return Reply(content=f"days_between returned {results[-1].strip()}, so the answer is "
                             f"\\boxed{{{results[-1].strip()}}}.")
    dates = DATE.findall(question(body))
    if "days_between" in offered_tools(body) and len(dates) == 2:
        call = tool_call("days_between", {"start": dates[0], "end": dates[1]})
        return Reply(content="I can count this exactly with days_between.", tool_calls=call.tool_calls)
    if len(dates) == 2:
        return by_hand(*dates)
    return Reply(content="I do not know which date New Year's Day 2024 is, so I estimate about a month and ten "
                         "days. \\boxed{41}")


def add(code: str, reason: str) -> Reply:
    call = tool_call("add_function", {**function_payload("days_between", code, ARGUMENTS),
                                      "description": "Days from one ISO date to another (negative if earlier)."})
    return Reply(content=reason, tool_calls=call.tool_calls)


def optimizer(body: dict[str, Any]) -> Reply:
    prompt, retried = body["messages"][1]["content"], any(m["role"] == "tool" for m in body["messages"])
    if "days_between" in list_a(body):  # the kept set has it: one revision the sandbox refuses, then no more
        if not retried:
            REVISIONS["asked"] += 1
        if REVISIONS["asked"] > 1:
            return TERMINATE
        revised = {**function_payload("days_between", WORDS, ARGUMENTS), "packages": "dateparser",
                   "description": "Days from one date to another; dates may also be written in words."}
        call = tool_call("revise_function", revised)
        return Reply(content="d13 writes its first date in words; parse it with dateparser.",
                     tool_calls=call.tool_calls)
    if "days_between" in list_b(body):
        return TERMINATE
    if "Rejected set" in prompt:
        return add(CORRECT, "The rolled-back version added one day; subtract the dates and nothing else.")
    if retried:
        return add(OFF_BY_ONE, "Renamed to match. Count both the first and the last day.")
    return add(WRONG_NAME, "The assistant counts every month as 30 days and misses; date arithmetic is exact.")


def world(body: dict[str, Any]) -> Reply:
    is_optimizer = any(t["function"]["name"] == "add_function" for t in body.get("tools") or [])
    return optimizer(body) if is_optimizer else agent(body)


def config(base_url: str, out: Path) -> dict[str, Any]:
    rows = examples()
    return {
        "name": NAME,
        "task": {"name": "inline", "train": rows[:8] + rows[12:], "test": rows[8:12], "scorer": "numeric"},
        "agent": {"model": "scripted-agent", "max_turns": 4},
        "optimizer": {"model": "scripted-optimizer", "epochs": 3, "max_actions": 2, "max_prompt_tokens": 2000},
        "llm": {"base_url": base_url, "cache": False,
                "prices": {"scripted-agent": {"input": 0, "output": 0},
                           "scripted-optimizer": {"input": 0, "output": 0}}},
        "output_dir": str(out),
    }


def agenttrain(*args: str) -> str:
    return subprocess.run([*CLI, *args], check=True, capture_output=True, text=True, cwd=ROOT).stdout


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(f"{NAME}-*"):
        shutil.rmtree(old)
    with FakeOpenAI(world) as server:
        path = out / "config.yaml"
        path.write_text(yaml.safe_dump(config(server.base_url, out), sort_keys=False), encoding="utf-8")
        try:
            agenttrain("train", str(path))
            [run] = out.glob(f"{NAME}-*")
            agenttrain("eval", str(run), "--epoch", "0")
            agenttrain("eval", str(run), "--epoch", "best")
        finally:
            path.unlink()
    agenttrain("report", str(run))
    from agenttrain.rundir.directory import RunDir

    RunDir(run).update_info(example="made by tools/make_example_run.py: agenttrain's own training loop, sandbox and "
                                    "scorer with two scripted LLMs (the tests' fake server), not real models")
    (run / ".lock").unlink(missing_ok=True)
    print(run)


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else OUT)
