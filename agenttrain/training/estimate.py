"""`train --dry-run`: how many calls, tokens and dollars a run may cost, before any is spent.

A rough model, stated in the output: an agent conversation takes `typical_turns` requests (at most
`max_turns`), each prompt re-sends the conversation so far, and every epoch's optimizer calls are filled
up to `max_prompt_tokens`. The worst case assumes every epoch runs and every conversation uses all turns.
A reasoning model also thinks before each reply, billed as output: `REASONING_TOKENS` per reply at its effort.
Before a paper's data set is pulled, its questions are assumed to be as many as the config's sizes ask for, each of
the data set's typical length (`typical_question_chars` of its task), and the estimate says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agenttrain.config import Experiment, ModelParams, TaskConfig, load_experiment, missing_file_error, missing_files
from agenttrain.endpoint.request_params import is_reasoning_model
from agenttrain.endpoint.usage import price_for
from agenttrain.optimizers import run_plan
from agenttrain.optimizers.prompting import CHARS_PER_TOKEN
from agenttrain.registry import tasks
from agenttrain.tasks import load_task

TYPICAL_TURNS = 3
SYSTEM_TOKENS = 300  # the agent's instructions
FUNCTION_TOKENS = 250  # one learned function offered as a tool
REPLY_TOKENS = 350  # one agent reply (reasoning, code or a call)
# hidden reasoning per reply at each reasoning_effort; OpenAI's reasoning models default to medium
REASONING_TOKENS = {"none": 0, "minimal": 150, "low": 600, "medium": 2000, "high": 6000, "xhigh": 12000,
                    "max": 20000}


@dataclass
class Estimate:
    role: str
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int  # including reasoning_tokens
    reasoning_tokens: int
    cost_usd: float | None  # None when the model has no known price

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _cost(experiment: Experiment, model: str, prompt: int, completion: int) -> float | None:
    price = price_for(model, experiment.prices())
    return None if price is None else price.cost(prompt, completion)


def _estimate(experiment: Experiment, role: str, model: str, params: ModelParams, requests: int, prompt: int,
              visible: int) -> Estimate:
    """One role's row: `visible` completion tokens plus the reasoning its model does per request."""
    effort = params.reasoning_effort or ("medium" if is_reasoning_model(model) else "none")
    reasoning = requests * REASONING_TOKENS[effort]
    completion = visible + reasoning
    return Estimate(role, model, requests, prompt, completion, reasoning, _cost(experiment, model, prompt, completion))


def _conversation_tokens(question_tokens: int, functions: int, turns: int, max_reply: int | None) -> tuple[int, int]:
    """Prompt and completion tokens of one conversation: each turn re-sends everything before it. A reply is
    `REPLY_TOKENS`, or the role's `max_tokens` when that is less."""
    reply = min(REPLY_TOKENS, max_reply or REPLY_TOKENS)
    base = SYSTEM_TOKENS + question_tokens + functions * FUNCTION_TOKENS
    prompt = sum(base + turn * 2 * reply for turn in range(turns))
    return prompt, turns * reply


def _question_tokens(questions: list[str]) -> int:
    return sum(len(q) for q in questions) // max(len(questions), 1) // CHARS_PER_TOKEN


def estimate_run(experiment: Experiment, train_questions: list[str], worst_case: bool, val_tasks: int = 0
                 ) -> list[Estimate]:
    agent, optimizer = experiment.agent, experiment.optimizer
    turns = agent.max_turns if worst_case else min(TYPICAL_TURNS, agent.max_turns)
    question_tokens = _question_tokens(train_questions)
    plan = run_plan(optimizer, worst_case, len(train_questions), val_tasks)
    optimizer_requests = plan.optimizer_requests
    functions = optimizer.max_actions * optimizer.epochs // 2  # the set grows by about half the actions
    prompt, completion = _conversation_tokens(question_tokens, functions, turns, agent.max_tokens)
    agent_requests = plan.rollouts * turns
    agent_prompt, agent_completion = plan.rollouts * prompt, plan.rollouts * completion
    histories = SYSTEM_TOKENS + plan.prompt_tasks * (question_tokens + turns * 2 * REPLY_TOKENS)
    per_call = optimizer.max_prompt_tokens if worst_case else min(histories, optimizer.max_prompt_tokens)
    optimizer_prompt = optimizer_requests * per_call
    optimizer_completion = optimizer_requests * min(plan.reply_tokens, optimizer.max_tokens or plan.reply_tokens)
    return [
        _estimate(experiment, "agent", agent.model, agent, agent_requests, agent_prompt, agent_completion),
        _estimate(experiment, "optimizer", optimizer.model, optimizer, optimizer_requests, optimizer_prompt,
                  optimizer_completion),
    ]


def estimate_eval(experiment: Experiment, questions: list[str], evaluations: int, worst_case: bool) -> Estimate:
    """`evaluations` passes of the agent over `questions` (a test split) with a trained function set."""
    agent, optimizer = experiment.agent, experiment.optimizer
    turns = agent.max_turns if worst_case else min(TYPICAL_TURNS, agent.max_turns)
    functions = optimizer.max_actions * optimizer.epochs // 2
    prompt, completion = _conversation_tokens(_question_tokens(questions), functions, turns, agent.max_tokens)
    runs = evaluations * len(questions)
    return _estimate(experiment, "agent (eval)", agent.model, agent, runs * turns, runs * prompt, runs * completion)


@dataclass(frozen=True)
class Questions:
    """A split's questions, or stand-ins of the data set's typical length when its data is not there yet."""

    texts: list[str]
    assumed: str | None = None  # what was assumed instead of the data, to say so beside the estimate


def split_questions(task: TaskConfig, split: str, source: str) -> Questions:
    """The questions of `split`; before a paper's data set is pulled, as many stand-ins of its typical question
    length as the config's sizes ask for. A task without sizes or a typical length still needs its data."""
    missing = missing_files(task)
    if not missing:
        return Questions([e.question for e in load_task(task).splits().get(split)])
    field, path = next(iter(missing.items()))
    typical = getattr(tasks.get(task.name), "typical_question_chars", None)
    size = {"train": task.train_size, "test": task.test_size, "val": task.val_size}[split]
    if typical is None or size is None:
        raise missing_file_error(task, field, path, source)
    count, chars = min(size, task.limit or size), typical(task)
    return Questions(["x" * chars] * count, f"{path} is not there yet (agenttrain data pull {task.name}): "
                                            f"{count} {split} questions of {chars} characters, {task.name}'s typical "
                                            "length, assumed")


FEW_PROPOSALS = 3  # fewer than this and an optimizer.budget leaves the search nothing to choose from


def dry_run(config_path: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Calls, tokens and cost a training run may spend: a typical case and a worst case, and how many proposals
    `optimizer.budget` affords. Nothing is sent. Works before a paper's data is pulled (`split_questions`)."""
    experiment = load_experiment(config_path, overrides, check_files=False)
    train = split_questions(experiment.task, "train", str(config_path))
    questions, val = train.texts, len(split_questions(experiment.task, "val", str(config_path)).texts)
    typical = estimate_run(experiment, questions, worst_case=False, val_tasks=val)
    return {
        "train_tasks": len(questions),
        "val_tasks": val,
        "assumed": [train.assumed] if train.assumed else [],
        "epochs": experiment.optimizer.epochs,
        "typical": [e.to_dict() for e in typical],
        "worst_case": [e.to_dict() for e in estimate_run(experiment, questions, worst_case=True, val_tasks=val)],
        "budget": budget_proposals(experiment, len(questions), val, typical),
        "note": "estimates assume no cache hits; completion tokens include a reasoning model's hidden reasoning "
        "(a guess per reply at the role's reasoning_effort); an unknown cost (null in --json) means the model has "
        "no known price (set llm.prices in the config)",
    }


def budget_proposals(experiment: Experiment, train: int, val: int, typical: list[Estimate]) -> dict[str, Any] | None:
    """How many proposals `optimizer.budget` affords at the typical cost of one (the baseline paid first), and a
    warning when that is fewer than FEW_PROPOSALS; None without a budget."""
    budget, plan = experiment.optimizer.budget, run_plan(experiment.optimizer, False, train, val)
    if not plan.candidates or all(v is None for v in (budget.rollouts, budget.tokens, budget.usd)):
        return None
    baseline_share = (train + val) / max(plan.rollouts, 1)  # the baseline's part of the agent's spend
    agent = typical[0]
    tokens = sum(e.prompt_tokens + e.completion_tokens for e in typical)
    costs = [e.cost_usd for e in typical]
    usd = None if None in costs else sum(c or 0.0 for c in costs)
    baseline = {"rollouts": train + val, "tokens": (agent.prompt_tokens + agent.completion_tokens) * baseline_share,
                "usd": (agent.cost_usd or 0.0) * baseline_share}
    total = {"rollouts": plan.rollouts, "tokens": tokens, "usd": usd}
    affordable = {}
    for key in ("rollouts", "tokens", "usd"):
        limit, spent = getattr(budget, key), total[key]
        if limit is not None and spent is not None:
            per_proposal = max((spent - baseline[key]) / plan.candidates, 1e-9)
            affordable[key] = max(int((limit - baseline[key]) // per_proposal), 0)
    if not affordable:
        return None
    limited_by = min(affordable, key=lambda key: affordable[key])
    proposals = affordable[limited_by]
    warning = (f"optimizer.budget affords only {proposals} proposals (limited by {limited_by}); a search needs "
               f"several to choose from: raise optimizer.budget.{limited_by}") if proposals < FEW_PROPOSALS else None
    return {"proposals": proposals, "limited_by": limited_by, "warning": warning}
