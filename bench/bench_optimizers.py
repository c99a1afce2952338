"""Optimizer methods judged on held-out tasks, in a simulated world whose phenomena are stated, over several seeds.

The world (an OpenAI-compatible server on loopback, tests/support/fake_openai.py, playing agent and optimizer):

- **Independent task kinds.** Six kinds of question ("What is the <kind> value of <x>?"), each answered by its
  own secret rule, (a*x + b) mod 97. A training set of 30 and a held-out set of 120 questions, all kinds mixed.
- **Noisy answers.** The agent calls the tool named for the question's kind when it is offered (else a
  generic `any_value` tool if offered) and answers with what the tool returned, but one time in ten it answers
  wrong anyway; with no tool it guesses right three times in ten. The draw depends on the question and on the
  offered functions, so any change of the set re-rolls it, as a change of prompt does with a real model.
- **Proposals that are sometimes buggy, harmful or overfit.** The optimizer reads the failed conversations in
  its prompt and writes (or revises) the tool for the kind that fails most. At fixed odds the code is correct,
  buggy (a wrong constant), overfit (a lookup table of the questions of that kind it was shown, 0 elsewhere),
  or harmful (a generic `any_value` that is wrong for every kind the agent then uses it for).

The code runs for real in agenttrain's sandbox. Each method trains on the 30 (search takes its validation split
out of them), then `eval` runs the best epoch on the 120. Printed: mean held-out accuracy and training tokens per
method over the seeds, for two sets of odds. Nothing is tuned to one setting: the same defaults serve both tables.

Run: .venv/bin/python bench/bench_optimizers.py [--seeds 5] [--methods progressive,search]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

sys.path.append(str(Path(__file__).resolve().parents[1]))  # for tests.*

from agenttrain import api
from tests.support.fake_openai import FakeOpenAI, Reply, tool_call

KINDS = ("alpha", "beta", "gamma", "delta", "omega", "sigma")
TRAIN, HELD_OUT = 30, 120
ANSWER_NOISE, GUESS_RIGHT = 0.1, 0.3
QUESTION = re.compile(r"What is the (\w+) value of (\d+)\?")
TASK_BLOCK = re.compile(r"### Task \S+ \((SOLVED|FAILED)\)\n(.*?)(?=\n### Task |\n\(\d+ more conversations|\Z)", re.S)
LISTED = re.compile(r"^name: (\w+)\ndescription: ([^\n]*)\narguments: ([^\n]*)\npackages: [^\n]*\ncode:\n```python\n"
                    r"(.*?)\n```", re.M | re.S)


@dataclass(frozen=True)
class Odds:
    """How the optimizer's proposals turn out."""

    correct: float
    buggy: float
    overfit: float
    harmful: float

    def draw(self, rng: random.Random) -> str:
        return rng.choices(["correct", "buggy", "overfit", "harmful"],
                           [self.correct, self.buggy, self.overfit, self.harmful])[0]


ODDS = {"correct 50%, buggy 20%, overfit 20%, harmful 10%": Odds(0.5, 0.2, 0.2, 0.1),
        "correct 30%, buggy 25%, overfit 35%, harmful 10%": Odds(0.3, 0.25, 0.35, 0.1)}


def digest(*parts: object) -> int:
    return int(hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:12], 16)


class World:
    def __init__(self, seed: int, odds: Odds) -> None:
        rng = random.Random(seed)
        self.seed, self.odds = seed, odds
        self.rules = {k: (rng.randrange(3, 90), rng.randrange(0, 97)) for k in KINDS}

    def answer(self, kind: str, x: int) -> int:
        a, b = self.rules[kind]
        return (a * x + b) % 97

    def questions(self, count: int, salt: str) -> list[dict[str, Any]]:
        rng = random.Random(f"{self.seed}-{salt}")
        rows = []
        for i in range(count):
            kind, x = KINDS[i % len(KINDS)], rng.randrange(100, 10_000)
            rows.append({"id": f"{salt}{i}", "question": f"What is the {kind} value of {x}?",
                         "answer": str(self.answer(kind, x))})
        return rows

    # -- the agent ----------------------------------------------------------------------------------------

    def agent(self, body: dict[str, Any]) -> Reply:
        question = next(m["content"] for m in body["messages"] if m["role"] == "user")
        kind, x = QUESTION.search(question).groups()  # type: ignore[union-attr]
        tools = {t["function"]["name"]: t for t in body.get("tools") or []}
        rng = random.Random(digest(self.seed, question, sorted(tools), [m.get("content") for m in body["messages"]]))
        results = [m["content"] for m in body["messages"] if m["role"] == "tool"]
        if results:
            found = re.findall(r"-?\d+", results[-1])
            value = found[-1] if found and rng.random() >= ANSWER_NOISE else "-1"
            return Reply(content=f"The answer is \\boxed{{{value}}}.")
        for name in (f"{kind}_value", "any_value"):
            if name in tools:
                return tool_call(name, {"x": int(x)})
        value = self.answer(kind, int(x)) if rng.random() < GUESS_RIGHT else -1
        return Reply(content=f"I estimate it. The answer is \\boxed{{{value}}}.")

    # -- the optimizer --------------------------------------------------------------------------------

    def optimizer(self, body: dict[str, Any]) -> Reply:
        prompt = body["messages"][1]["content"]
        tool = {t["function"]["name"] for t in body["tools"]}
        rng = random.Random(digest(self.seed, prompt, len(body["messages"])))
        current = {name: {"name": name, "description": description, "arguments": arguments, "packages": "",
                          "code": code + "\n"}
                   for name, description, arguments, code in LISTED.findall(_list_b(prompt))}
        failing, shown = self._read(prompt)
        if "create_functions" in tool:
            return tool_call("create_functions", {"functions": [
                {**self._function(kind, shown, rng), "tasks": []} for kind in sorted(failing)]})
        if not failing:
            return Reply(content="TERMINATE")
        # a kind with no tool yet first, else the tool of the kind that fails most is revised
        kind = max(sorted(failing), key=lambda k: (f"{k}_value" not in current, failing[k]))
        function = self._function(kind, shown, rng)
        if "replace_functions" in tool:  # the whole list: what it keeps, as it is, and the new version
            kept = [f for name, f in sorted(current.items()) if name != function["name"]]
            return tool_call("replace_functions", {"functions": [*kept, function]})
        action = "revise_function" if function["name"] in current else "add_function"
        return tool_call(action, function)

    def _read(self, prompt: str) -> tuple[dict[str, int], dict[str, list[int]]]:
        """Kinds of the failed conversations in the prompt (with counts), and the questions shown per kind."""
        failing: dict[str, int] = {}
        shown: dict[str, list[int]] = {}
        for verdict, text in TASK_BLOCK.findall(prompt):
            if found := QUESTION.search(text):
                kind, x = found.group(1), int(found.group(2))
                shown.setdefault(kind, []).append(x)
                if verdict == "FAILED":
                    failing[kind] = failing.get(kind, 0) + 1
        return failing, shown

    def _function(self, kind: str, shown: dict[str, list[int]], rng: random.Random,
                  outcome: str | None = None) -> dict[str, str]:
        outcome = outcome or self.odds.draw(rng)
        a, b = self.rules[kind]
        name = "any_value" if outcome == "harmful" else f"{kind}_value"
        body = {
            "correct": f"    return ({a} * x + {b}) % 97",
            "buggy": f"    return ({a} * x + {b + 1}) % 97",
            "overfit": f"    table = {{{', '.join(f'{x}: {self.answer(kind, x)}' for x in shown.get(kind, []))}}}\n"
                       "    return table.get(x, 0)",
            "harmful": "    return x % 97",
        }[outcome]
        return {"name": name, "description": f"The {kind} value of x." if name != "any_value" else
                "The value of x for any kind of question.", "arguments": json.dumps({"x": {"type": "integer"}}),
                "packages": "", "code": f"def {name}(x):\n{body}\n"}

    def respond(self, body: dict[str, Any]) -> Reply:
        names = {t["function"]["name"] for t in body.get("tools") or []}
        is_optimizer = names & {"add_function", "replace_functions", "create_functions"}
        reply = self.optimizer(body) if is_optimizer else self.agent(body)
        # tokens as a real endpoint would count them: about 4 characters each
        reply.prompt_tokens = len(json.dumps(body["messages"]) + json.dumps(body.get("tools") or [])) // 4
        reply.completion_tokens = max(len(json.dumps([reply.content, reply.tool_calls])) // 4, 1)
        return reply


def _list_b(prompt: str) -> str:
    """The current list in an optimizer prompt (List B: the list as this step's actions left it)."""
    return prompt.split("## List B", 1)[-1].split("## Function lists", 1)[0] if "## List B" in prompt else ""


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_once(method: str, seed: int, odds: Odds, folder: Path, overrides: list[str]) -> tuple[float, int, float]:
    """Held-out accuracy of the run's best epoch, the run's training tokens, and its validation accuracy."""
    world = World(seed, odds)
    folder.mkdir(parents=True)
    train = write_jsonl(folder / "train.jsonl", world.questions(TRAIN, "t"))
    held_out = write_jsonl(folder / "held-out.jsonl", world.questions(HELD_OUT, "h"))
    with FakeOpenAI(world.respond) as server:
        config = {
            "name": f"{method}-{seed}",
            "task": {"name": "jsonl", "train_path": str(train), "test_path": str(held_out), "scorer": "numeric",
                     "seed": seed, "train_size": TRAIN},
            "agent": {"model": "agent", "max_turns": 4},
            "optimizer": {"model": "optimizer", "method": method},
            "llm": {"base_url": server.base_url, "api_key_env": "NO_KEY", "cache_dir": str(folder / "cache"),
                    "concurrency": 16, "max_retries": 0},
            "sandbox": {"warm_workers": 2}, "output_dir": str(folder / "runs"),
        }
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        run = api.train(folder / "config.yaml", overrides, offline=True).run
        evaluation = api.eval_run(run.path, offline=True)
    tokens = sum(u.get("total_tokens", 0) for u in (run.info().usage or {}).values())
    best = run.snapshot(run.best_epoch()).metrics
    return evaluation["accuracy"], tokens, best.val_accuracy if best.val_accuracy is not None else float("nan")


def table(key: str, odds: Odds, methods: list[str], seeds: int, root: Path, overrides: list[str]) -> None:
    print(f"\nProposals {key}; {seeds} seeds, {TRAIN} training and {HELD_OUT} held-out tasks")
    print("| method | held-out accuracy (mean, min-max) | training tokens (mean) | seconds |")
    print("|---|---|---|---|")
    for method in methods:
        started, results = time.monotonic(), []
        sets = [o.split(":", 1)[1] for o in overrides if o.startswith(f"{method}:")]
        for seed in range(seeds):
            results.append(run_once(method, seed, odds, root / f"odds{list(ODDS).index(key)}-{method}-{seed}", sets))
        accuracy = [r[0] for r in results]
        print(f"| `{method}` | {statistics.mean(accuracy):.2f} ({min(accuracy):.2f}-{max(accuracy):.2f}) | "
              f"{statistics.mean(r[1] for r in results) / 1000:.0f}k | {time.monotonic() - started:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--methods", default="progressive,all_at_once,tool_creation,search")
    parser.add_argument("--odds", type=int, default=None, help="only the table of this index (0 or 1)")
    parser.add_argument("--keep", type=Path, default=None, help="leave the runs in this folder to inspect")
    parser.add_argument("--set", action="append", default=[], metavar="METHOD:KEY=VALUE",
                        help="a config override for one method's runs, to compare settings")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # "no price known" for the simulated models
    with tempfile.TemporaryDirectory() as tmp:
        for index, (key, odds) in enumerate(ODDS.items()):
            if args.odds is None or args.odds == index:
                table(key, odds, args.methods.split(","), args.seeds, args.keep or Path(tmp), args.set)


if __name__ == "__main__":
    main()
