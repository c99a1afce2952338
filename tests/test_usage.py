import logging

import pytest

from agenttrain.config import BudgetConfig, Price
from agenttrain.endpoint.usage import BudgetExhausted, Usage, UsageMeter, price_for


def test_dated_variants_take_the_price_of_their_longest_prefix():
    assert price_for("gpt-4o-mini-2024-07-18", {}) == price_for("gpt-4o-mini", {})
    assert price_for("gpt-4o-2024-08-06", {}) == price_for("gpt-4o", {})
    assert price_for("gpt-4o-mini", {}) != price_for("gpt-4o", {})


def test_config_prices_override_the_defaults_and_add_models():
    mine = Price(input=1, output=2)
    assert price_for("gpt-4o", {"gpt-4o": mine}) == mine
    assert price_for("llama-3-8b", {"llama-3-8b": mine}) == mine
    assert price_for("llama-3-8b", {}) is None


def test_cost_is_computed_from_the_price_per_million_tokens():
    meter = UsageMeter(BudgetConfig(), {"m": Price(input=2.0, output=10.0)})
    meter.record("agent", "m", prompt_tokens=1_000, completion_tokens=500, cached=False)
    assert meter.total().cost_usd == pytest.approx(1_000 * 2.0 / 1e6 + 500 * 10.0 / 1e6)


def test_cache_hits_are_counted_but_cost_nothing():
    meter = UsageMeter(BudgetConfig(), {"m": Price(input=2.0, output=10.0)})
    meter.record("agent", "m", 100, 50, cached=False)
    meter.record("agent", "m", 100, 50, cached=True)
    usage = meter.by_role()["agent"]
    assert (usage.requests, usage.cache_hits, usage.total_tokens) == (1, 1, 150)
    assert usage.cost_usd == pytest.approx((100 * 2.0 + 50 * 10.0) / 1e6)


def test_unknown_model_costs_nothing_and_warns_once(caplog):
    meter = UsageMeter(BudgetConfig(), {})
    with caplog.at_level(logging.WARNING, logger="agenttrain.endpoint.usage"):
        meter.record("agent", "my-local-model", 10, 10, cached=False)
        meter.record("agent", "my-local-model", 10, 10, cached=False)
    assert meter.total().cost_usd == 0
    warnings = [r.getMessage() for r in caplog.records if "my-local-model" in r.getMessage()]
    assert len(warnings) == 1 and "llm.prices" in warnings[0]


def test_roles_are_kept_apart_and_summed_in_the_total():
    meter = UsageMeter(BudgetConfig(), {})
    meter.record("agent", "gpt-4o-mini", 100, 10, cached=False)
    meter.record("optimizer", "gpt-4o", 1000, 100, cached=False)
    roles = meter.by_role()
    assert roles["agent"].total_tokens == 110 and roles["optimizer"].total_tokens == 1100
    assert meter.total().total_tokens == 1210
    assert meter.total().cost_usd == pytest.approx(roles["agent"].cost_usd + roles["optimizer"].cost_usd)


def test_by_role_returns_copies():
    meter = UsageMeter(BudgetConfig(), {})
    meter.record("agent", "m", 10, 10, cached=False)
    meter.by_role()["agent"].requests = 99
    assert meter.by_role()["agent"].requests == 1


def test_usage_difference_gives_an_epoch_delta():
    before = Usage(requests=2, cache_hits=1, prompt_tokens=100, completion_tokens=10, cost_usd=0.5)
    step = Usage(requests=3, cache_hits=0, prompt_tokens=50, completion_tokens=5, cost_usd=0.25)
    assert (before + step) - before == step


def test_budget_in_dollars_stops_once_reached():
    meter = UsageMeter(BudgetConfig(max_usd=0.01), {"m": Price(input=1000, output=0)})
    meter.record("agent", "m", 5, 0, cached=False)  # $0.005
    meter.check_budget()
    meter.record("optimizer", "m", 5, 0, cached=False)  # $0.010 in total, across roles
    with pytest.raises(BudgetExhausted, match=r"max_usd.*\$0\.0100"):
        meter.check_budget()


def test_budget_in_tokens_stops_once_reached():
    meter = UsageMeter(BudgetConfig(max_tokens=100), {})
    meter.record("agent", "m", 60, 39, cached=False)
    meter.check_budget()
    meter.record("agent", "m", 1, 0, cached=False)
    with pytest.raises(BudgetExhausted, match=r"max_tokens.*100 of 100"):
        meter.check_budget()


def test_restore_continues_from_saved_totals():
    prices = {"m": Price(input=1.0, output=2.0)}
    first = UsageMeter(BudgetConfig(), prices)
    first.record("agent", "m", 100, 10, cached=False)
    first.record("optimizer", "m", 200, 20, cached=True)
    saved = {role: usage.to_dict() for role, usage in first.by_role().items()}

    resumed = UsageMeter(BudgetConfig(), prices)
    resumed.restore(saved)
    resumed.record("agent", "m", 1, 1, cached=False)
    agent = resumed.by_role()["agent"]
    assert (agent.requests, agent.prompt_tokens, agent.completion_tokens) == (2, 101, 11)
    assert agent.cost_usd == pytest.approx((101 * 1.0 + 11 * 2.0) / 1e6)
    assert resumed.by_role()["optimizer"].cache_hits == 1
