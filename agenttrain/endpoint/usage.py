"""Token usage and cost: what a run has spent per role, and the budget that stops it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, fields
from typing import Any

from agenttrain.config import BudgetConfig, Price

logger = logging.getLogger(__name__)

# OpenAI's standard-tier list prices in US dollars per million tokens: input, cached input, output (reasoning
# tokens are billed as output). From developers.openai.com/api/docs/pricing as quoted on 2026-11-30; the
# GPT-5.6 and GPT-6 rows are the list prices that took effect 2026-07 to 2026-09. A dated variant such as
# "gpt-4o-2024-08-06" takes the price of its longest listed prefix. To correct or add a model, set
# `llm.prices.<model>: {input: ..., output: ..., cached_input: ...}` in the config; it overrides this table.
PRICE_TABLE_DATE = "2026-11-30"
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-6-astra": Price(input=10.00, cached_input=1.00, output=50.00),
    "gpt-6-sol": Price(input=2.00, cached_input=0.20, output=10.00),
    "gpt-6.1-sol": Price(input=2.00, cached_input=0.10, output=10.00),
    "gpt-6-luna": Price(input=0.10, cached_input=0.01, output=0.50),
    "gpt-5.6-sol": Price(input=5.00, cached_input=0.50, output=30.00),
    "gpt-5.6-terra": Price(input=2.00, cached_input=0.20, output=12.00),
    "gpt-5.6-luna": Price(input=0.20, cached_input=0.02, output=1.20),
    "gpt-5.5": Price(input=5.00, cached_input=0.50, output=30.00),
    "gpt-5.5-pro": Price(input=30.00, output=180.00),
    "gpt-5.4": Price(input=2.50, cached_input=0.25, output=15.00),
    "gpt-5.4-mini": Price(input=0.75, cached_input=0.075, output=4.50),
    "gpt-5.4-nano": Price(input=0.20, cached_input=0.02, output=1.25),
    "gpt-5.4-pro": Price(input=30.00, output=180.00),
    "gpt-5.2": Price(input=1.75, cached_input=0.175, output=14.00),
    "gpt-5.2-pro": Price(input=21.00, output=168.00),
    "gpt-5.1": Price(input=1.25, cached_input=0.125, output=10.00),
    "gpt-5": Price(input=1.25, cached_input=0.125, output=10.00),
    "gpt-5-mini": Price(input=0.25, cached_input=0.025, output=2.00),
    "gpt-5-nano": Price(input=0.05, cached_input=0.005, output=0.40),
    "gpt-5-pro": Price(input=15.00, output=120.00),
    "o1": Price(input=15.00, cached_input=7.50, output=60.00),
    "o1-pro": Price(input=150.00, output=600.00),
    "o1-mini": Price(input=1.10, cached_input=0.55, output=4.40),
    "o3": Price(input=2.00, cached_input=0.50, output=8.00),
    "o3-pro": Price(input=20.00, output=80.00),
    "o3-mini": Price(input=1.10, cached_input=0.55, output=4.40),
    "o4-mini": Price(input=1.10, cached_input=0.275, output=4.40),
    "gpt-4.1": Price(input=2.00, cached_input=0.50, output=8.00),
    "gpt-4.1-mini": Price(input=0.40, cached_input=0.10, output=1.60),
    "gpt-4.1-nano": Price(input=0.10, cached_input=0.025, output=0.40),
    "gpt-4o": Price(input=2.50, cached_input=1.25, output=10.00),
    "gpt-4o-2024-05-13": Price(input=5.00, output=15.00),
    "gpt-4o-mini": Price(input=0.15, cached_input=0.075, output=0.60),
    "gpt-4-turbo": Price(input=10.00, output=30.00),
    "gpt-4-1106-preview": Price(input=10.00, output=30.00),
    "gpt-4-0125-preview": Price(input=10.00, output=30.00),
    "gpt-4": Price(input=30.00, output=60.00),
    "gpt-3.5-turbo": Price(input=0.50, output=1.50),
    "gpt-3.5-turbo-1106": Price(input=1.00, output=2.00),
}


def price_for(model: str, prices: dict[str, Price]) -> Price | None:
    """The price of `model`: its own entry, else its longest listed prefix; config entries override defaults.
    A provider prefix ("openai/gpt-5" through LiteLLM or OpenRouter) is looked past."""
    table = {**DEFAULT_PRICES, **prices}
    for name in dict.fromkeys([model, model.rsplit("/", 1)[-1]]):
        if name in table:
            return table[name]
        prefixes = [listed for listed in table if name.startswith(listed + "-")]
        if prefixes:
            return table[max(prefixes, key=len)]
    return None


@dataclass
class Usage:
    """Counts for one role (or a total). `requests` are real API calls; cache hits are free and counted apart."""

    requests: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0  # including reasoning tokens
    cost_usd: float = 0.0
    reasoning_tokens: int = 0  # the hidden part of completion_tokens, where the endpoint reports it
    cached_prompt_tokens: int = 0  # the part of prompt_tokens billed at the cached-input price
    reasoning_cost_usd: float = 0.0  # the part of cost_usd spent on reasoning tokens

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __sub__(self, other: Usage) -> Usage:
        return Usage(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_tokens": self.total_tokens}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        """Inverse of `to_dict`; derived keys such as `total_tokens` are ignored."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


# The usage of the work done in one context (an asyncio task and the tasks it starts): set by `lane_usage`, so that
# concurrent work (a search's candidates) is counted apart as well as in the run's total.
_LANE: ContextVar[dict[str, Usage] | None] = ContextVar("agenttrain_usage_lane", default=None)


@contextmanager
def lane_usage() -> Iterator[dict[str, Usage]]:
    """Usage per role of everything metered inside the block, in this task and the tasks it starts."""
    spent: dict[str, Usage] = {}
    token = _LANE.set(spent)
    try:
        yield spent
    finally:
        _LANE.reset(token)


class BudgetExhausted(Exception):
    """The run reached `budget.max_usd` or `budget.max_tokens`, or its sweep `--max-usd` or `--max-tokens`; no
    further request is sent."""


# Told the cost and tokens of every reply any meter of this process records, when the process spends from a budget
# shared with others (a sweep's job: agenttrain.endpoint.shared_limits); None: nobody else is told.
SpendingListener = Callable[[float, int], None]
_spending_listener: SpendingListener | None = None


def report_spending(listener: SpendingListener | None) -> None:
    global _spending_listener
    _spending_listener = listener


class UsageMeter:
    """One per run, shared by every client, so the budget covers the agent and the optimizer together."""

    def __init__(self, budget: BudgetConfig, prices: dict[str, Price]) -> None:
        self.budget = budget
        self.prices = prices
        self._by_role: dict[str, Usage] = {}
        self._unpriced: set[str] = set()

    def record(
        self,
        role: str,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        cached: bool,
        *,
        reasoning_tokens: int = 0,
        cached_prompt_tokens: int = 0,
    ) -> None:
        """One reply; `cached` means our response cache answered (free). The reasoning and cached-prompt
        counts are parts of `completion_tokens` and `prompt_tokens`, as OpenAI reports them."""
        if cached:
            self.add({role: Usage(cache_hits=1)})
            return
        usage = Usage(requests=1, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                      reasoning_tokens=reasoning_tokens, cached_prompt_tokens=cached_prompt_tokens)
        if (price := self._price(model)) is not None:
            usage.cost_usd = price.cost(prompt_tokens, completion_tokens, cached_prompt_tokens)
            usage.reasoning_cost_usd = price.cost(0, reasoning_tokens)
        self.add({role: usage})
        if _spending_listener:
            _spending_listener(usage.cost_usd, prompt_tokens + completion_tokens)

    def _price(self, model: str) -> Price | None:
        price = price_for(model, self.prices)
        if price is None and model not in self._unpriced:
            self._unpriced.add(model)
            logger.warning("no price known for model %r: its cost counts as $0 (set llm.prices.%s)", model, model)
        return price

    def by_role(self) -> dict[str, Usage]:
        return {role: Usage(**asdict(usage)) for role, usage in self._by_role.items()}

    def total(self) -> Usage:
        return sum(self._by_role.values(), Usage())

    def check_budget(self) -> None:
        spent = self.total()
        max_usd, max_tokens = self.budget.max_usd, self.budget.max_tokens
        if max_usd is not None and spent.cost_usd >= max_usd:
            raise BudgetExhausted(
                f"budget.max_usd reached: spent ${spent.cost_usd:.4f} of ${max_usd:.4f} "
                f"({spent.total_tokens} tokens in {spent.requests} requests)"
            )
        if max_tokens is not None and spent.total_tokens >= max_tokens:
            raise BudgetExhausted(
                f"budget.max_tokens reached: spent {spent.total_tokens} of {max_tokens} tokens "
                f"(${spent.cost_usd:.4f} in {spent.requests} requests)"
            )

    def add(self, by_role: dict[str, Usage]) -> None:
        """Count usage (a reply, or a Ray worker's requests) as this run's, and as the current lane's."""
        lane = _LANE.get()
        for role, usage in by_role.items():
            self._by_role[role] = self._by_role.get(role, Usage()) + usage
            if lane is not None:
                lane[role] = lane.get(role, Usage()) + usage

    def restore(self, by_role: dict[str, dict[str, Any]]) -> None:
        """Continue a resumed run from the per-role totals it saved (`Usage.to_dict` form)."""
        self._by_role = {role: Usage.from_dict(data) for role, data in by_role.items()}
