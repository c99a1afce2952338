"""Token usage and cost: what a run has spent per role, and the budget that stops it."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from typing import Any

from agenttrain.config import BudgetConfig, Price

logger = logging.getLogger(__name__)

# US dollars per million tokens (OpenAI list prices). A dated variant such as "gpt-4o-2024-08-06"
# takes the price of its longest listed prefix; `llm.prices` in the config overrides any entry.
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4o": Price(input=2.50, output=10.00),
    "gpt-4o-2024-05-13": Price(input=5.00, output=15.00),
    "gpt-4o-mini": Price(input=0.15, output=0.60),
    "gpt-4.1": Price(input=2.00, output=8.00),
    "gpt-4.1-mini": Price(input=0.40, output=1.60),
    "gpt-4.1-nano": Price(input=0.10, output=0.40),
    "gpt-4-turbo": Price(input=10.00, output=30.00),
    "gpt-4-1106-preview": Price(input=10.00, output=30.00),
    "gpt-4-0125-preview": Price(input=10.00, output=30.00),
    "gpt-4": Price(input=30.00, output=60.00),
    "gpt-3.5-turbo": Price(input=0.50, output=1.50),
    "gpt-3.5-turbo-1106": Price(input=1.00, output=2.00),
    "o1": Price(input=15.00, output=60.00),
    "o1-mini": Price(input=1.10, output=4.40),
    "o3": Price(input=2.00, output=8.00),
    "o3-mini": Price(input=1.10, output=4.40),
    "o4-mini": Price(input=1.10, output=4.40),
}


def price_for(model: str, prices: dict[str, Price]) -> Price | None:
    """The price of `model`: its own entry, else its longest listed prefix; config entries override defaults."""
    table = {**DEFAULT_PRICES, **prices}
    if model in table:
        return table[model]
    prefixes = [name for name in table if model.startswith(name + "-")]
    return table[max(prefixes, key=len)] if prefixes else None


@dataclass
class Usage:
    """Counts for one role (or a total). `requests` are real API calls; cache hits are free and counted apart."""

    requests: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

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


class BudgetExhausted(Exception):
    """The run reached `budget.max_usd` or `budget.max_tokens`; no further request is sent."""


class UsageMeter:
    """One per run, shared by every client, so the budget covers the agent and the optimizer together."""

    def __init__(self, budget: BudgetConfig, prices: dict[str, Price]) -> None:
        self.budget = budget
        self.prices = prices
        self._by_role: dict[str, Usage] = {}
        self._unpriced: set[str] = set()

    def record(self, role: str, model: str, prompt_tokens: int, completion_tokens: int, cached: bool) -> None:
        usage = self._by_role.setdefault(role, Usage())
        if cached:
            usage.cache_hits += 1
            return
        usage.requests += 1
        usage.prompt_tokens += prompt_tokens
        usage.completion_tokens += completion_tokens
        usage.cost_usd += self._cost(model, prompt_tokens, completion_tokens)

    def _cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        price = price_for(model, self.prices)
        if price is None:
            if model not in self._unpriced:
                self._unpriced.add(model)
                logger.warning("no price known for model %r: its cost counts as $0 (set llm.prices.%s)", model, model)
            return 0.0
        return price.cost(prompt_tokens, completion_tokens)

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

    def restore(self, by_role: dict[str, dict[str, Any]]) -> None:
        """Continue a resumed run from the per-role totals it saved (`Usage.to_dict` form)."""
        self._by_role = {role: Usage.from_dict(data) for role, data in by_role.items()}
