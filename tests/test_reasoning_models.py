"""Today's models on the wire: each model family gets the parameters it accepts, a refused parameter names its
config key, and reasoning and cached prompt tokens reach usage, cost, the estimate, `show` and `report`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from agenttrain.cli import app
from agenttrain.config import BudgetConfig, ConfigError, LLMConfig, ModelParams, Price, load_experiment
from agenttrain.endpoint.cache import ResponseCache
from agenttrain.endpoint.client import ChatReply, EndpointDown, LLMClient, LLMError
from agenttrain.endpoint.usage import DEFAULT_PRICES, PRICE_TABLE_DATE, UsageMeter, price_for
from tests.support.fake_openai import FakeOpenAI, Fault, Reply
from tests.support.files import write_problems
from tests.support.scripted import MULTIPLY, TERMINATE, add, is_optimizer, list_b, multiplying_agent

MESSAGES = [{"role": "user", "content": "hi"}]
PRODUCTS = [("What is 6 times 7?", "42"), ("What is 5 times 8?", "40"), ("What is 3 times 9?", "27"),
            ("What is 4 times 4?", "16")]
runner = CliRunner()


def chat(base_url: str, model: str, params: ModelParams | None = None, *, role: str = "optimizer",
         meter: UsageMeter | None = None, cache: ResponseCache | None = None, **options: Any) -> ChatReply:
    """One request through a fresh client (no retries, so a retried refusal would show as a second request)."""

    async def main() -> ChatReply:
        client = LLMClient(LLMConfig(base_url=base_url, max_retries=3), role=role,
                           meter=meter or UsageMeter(BudgetConfig(), {}), cache=cache, backoff_s=0.01)
        try:
            return await client.chat(MESSAGES, model=model, params=params, **options)
        finally:
            await client.close()

    return asyncio.run(main())


def sent(server: FakeOpenAI) -> dict[str, Any]:
    """The last request's parameters, without the conversation."""
    return {key: value for key, value in server.requests[-1].items() if key not in ("model", "messages")}


# --- what each family is sent ---


def test_a_chat_model_gets_temperature_zero_and_max_tokens():
    with FakeOpenAI(lambda body: "ok", reasoning_rules=True) as server:
        chat(server.base_url, "gpt-4o-mini")
        assert sent(server) == {"temperature": 0.0}
        chat(server.base_url, "gpt-4o-mini", ModelParams(max_tokens=100), stop=["\n"])
        assert sent(server) == {"temperature": 0.0, "max_tokens": 100, "stop": ["\n"]}


@pytest.mark.parametrize("model", ["o3", "o4-mini", "o1-2024-12-17", "gpt-5", "gpt-5-mini", "gpt-5.4-nano",
                                   "openai/o3"])
def test_a_reasoning_model_gets_no_temperature_no_stop_and_max_completion_tokens(model):
    with FakeOpenAI(lambda body: "ok", reasoning_rules=True) as server:
        reply = chat(server.base_url, model, ModelParams(max_tokens=4000), stop=["Observation:"])
    assert reply.message["content"] == "ok"
    assert sent(server) == {"max_completion_tokens": 4000}


def test_parameters_are_sent_only_when_set_and_extra_body_reaches_the_server():
    params = ModelParams(temperature=0.3, reasoning_effort="high", top_p=0.9, seed=7,
                         extra_body={"top_k": 20, "chat_template_kwargs": {"enable_thinking": False}})
    with FakeOpenAI(lambda body: "ok") as server:
        chat(server.base_url, "Qwen/Qwen3-8B", params)
    assert sent(server) == {"temperature": 0.3, "reasoning_effort": "high", "top_p": 0.9, "seed": 7, "top_k": 20,
                            "chat_template_kwargs": {"enable_thinking": False}}


def test_a_set_temperature_is_sent_to_a_reasoning_model_too():
    """Some GPT-5 variants take a temperature; agenttrain sends what the user set and lets the server decide."""
    with FakeOpenAI(lambda body: "ok") as server:
        chat(server.base_url, "gpt-5.1", ModelParams(temperature=0.2, reasoning_effort="none"))
    assert sent(server) == {"temperature": 0.2, "reasoning_effort": "none"}


# --- a refused parameter ---


@pytest.mark.parametrize(("params", "key"), [
    (ModelParams(temperature=0), "optimizer.temperature"),
    (ModelParams(top_p=0.5), "optimizer.top_p"),
])
def test_a_refused_parameter_stops_the_run_naming_the_config_key_without_retrying(params, key):
    with FakeOpenAI(lambda body: "ok", reasoning_rules=True) as server, pytest.raises(EndpointDown) as refused:
        chat(server.base_url, "o3", params)
    message = str(refused.value)
    assert key in message and "'o3'" in message and "Only the default (1) value is supported" in message
    assert "\n" not in message and len(server.requests) == 1


def test_a_server_that_names_the_parameter_only_in_its_message_still_gets_the_key_named():
    refusal = Fault(400, message="top_k: extra fields not permitted")  # no `param`, as vLLM and llama.cpp answer
    expected = r"change or remove agent\.extra_body\.top_k in the config"
    with FakeOpenAI(lambda body: refusal) as server, pytest.raises(EndpointDown, match=expected):
        chat(server.base_url, "local", ModelParams(extra_body={"top_k": 5}), role="agent")
    assert len(server.requests) == 1


@pytest.mark.parametrize("message", [
    "context length exceeded",
    # vLLM's words for a conversation grown too long: one task's problem, not a setting to change
    "'max_tokens' or 'max_completion_tokens' is too large: 500. This model's maximum context length is 4096 "
    "tokens and your request has 3800 input tokens",
])
def test_a_400_about_something_else_fails_only_that_request(message):
    with FakeOpenAI(lambda body: Fault(400, message=message)) as server, pytest.raises(LLMError):
        chat(server.base_url, "local", ModelParams(max_tokens=500))
    assert len(server.requests) == 1


@pytest.mark.parametrize(("setting", "message"), [
    ("optimizer.extra_body={temperature: 1}", "extra_body may not set temperature"),
    ("agent.extra_body={max_tokens: 5, model: x}", "extra_body may not set max_tokens, model"),
    ("optimizer.reasoning_effort=hihg", "optimizer.reasoning_effort"),
    ("llm.prices={m: {input: 1, output: 2, cached_input: -1}}", "llm.prices.m.cached_input"),
])
def test_bad_model_parameters_are_config_errors_naming_the_key(tmp_path, setting, message):
    config = tmp_path / "config.yaml"
    config.write_text(f"name: t\ntask: {{name: math, path: {tmp_path}}}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_experiment(config, [setting])


# --- usage and cost ---


def test_reasoning_and_cached_prompt_tokens_are_counted_and_billed_at_their_prices():
    price = Price(input=2.0, cached_input=0.5, output=8.0)
    meter = UsageMeter(BudgetConfig(), {"o3": price})
    reply = Reply(content="ok", prompt_tokens=1000, cached_prompt_tokens=600, completion_tokens=50,
                  reasoning_tokens=450)
    with FakeOpenAI(lambda body: reply, reasoning_rules=True) as server:
        answer = chat(server.base_url, "o3", meter=meter)
    assert (answer.completion_tokens, answer.reasoning_tokens, answer.cached_prompt_tokens) == (500, 450, 600)
    usage = meter.by_role()["optimizer"]
    assert (usage.prompt_tokens, usage.cached_prompt_tokens) == (1000, 600)
    assert (usage.completion_tokens, usage.reasoning_tokens, usage.total_tokens) == (500, 450, 1500)
    assert usage.cost_usd == pytest.approx((400 * 2.0 + 600 * 0.5 + 500 * 8.0) / 1e6)
    assert usage.reasoning_cost_usd == pytest.approx(450 * 8.0 / 1e6)


def test_a_model_without_a_cached_price_bills_cached_prompt_tokens_at_the_input_price():
    assert Price(input=2.0, output=8.0).cost(1000, 0, cached_prompt_tokens=600) == pytest.approx(1000 * 2.0 / 1e6)


def test_a_replayed_reply_keeps_its_token_details_and_costs_nothing(tmp_path):
    meter = UsageMeter(BudgetConfig(), {"o3": Price(input=2.0, output=8.0)})
    reply = Reply(content="ok", reasoning_tokens=300, cached_prompt_tokens=4)
    with FakeOpenAI(lambda body: reply) as server:
        first = chat(server.base_url, "o3", meter=meter, cache=ResponseCache(tmp_path))
        again = chat(server.base_url, "o3", meter=meter, cache=ResponseCache(tmp_path))
    assert again.cached and dataclasses.replace(again, cached=False) == first
    usage = meter.by_role()["optimizer"]
    assert (usage.requests, usage.cache_hits, usage.reasoning_tokens) == (1, 1, 300)


def test_the_price_table_is_dated_and_covers_current_openai_models():
    assert PRICE_TABLE_DATE == "2026-11-30"
    for model in ("gpt-5.5", "gpt-5.4-mini", "gpt-5", "gpt-5-mini", "gpt-5-nano", "o3", "o4-mini", "gpt-4.1"):
        assert DEFAULT_PRICES[model].cached_input is not None, model
    assert price_for("gpt-5-mini-2025-08-07", {}) == DEFAULT_PRICES["gpt-5-mini"]
    assert price_for("openai/o4-mini", {}) == DEFAULT_PRICES["o4-mini"]  # through a LiteLLM proxy


# --- the response cache key ---


@pytest.mark.parametrize("routing_only", [{"user": "me"}, {"prompt_cache_key": "run-1"}, {"cache_prompt": True}])
def test_fields_that_do_not_change_the_reply_still_hit_the_cache(tmp_path, routing_only):
    with FakeOpenAI(lambda body: "ok") as server:
        chat(server.base_url, "m", cache=ResponseCache(tmp_path))
        again = chat(server.base_url, "m", ModelParams(extra_body=routing_only), cache=ResponseCache(tmp_path))
    assert again.cached and len(server.requests) == 1


def test_a_null_temperature_and_the_family_default_are_one_request(tmp_path):
    with FakeOpenAI(lambda body: "ok") as server:
        chat(server.base_url, "gpt-4o-mini", cache=ResponseCache(tmp_path))
        again = chat(server.base_url, "gpt-4o-mini", ModelParams(temperature=0), cache=ResponseCache(tmp_path))
    assert again.cached and len(server.requests) == 1


# --- the estimate and a whole run ---


def invoke(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads(result.stdout)


def test_dry_run_counts_a_reasoning_optimizer_s_reasoning_tokens_in_its_cost(write_config, tmp_path):
    data = write_problems(tmp_path / "problems.jsonl", PRODUCTS)
    config = write_config("http://127.0.0.1:9/v1", data, agent={"model": "gpt-4o-mini"},
                          optimizer={"model": "o3", "reasoning_effort": "high"})
    agent, optimizer = invoke("train", str(config), "--dry-run")["typical"]
    assert agent["reasoning_tokens"] == 0
    assert optimizer["reasoning_tokens"] == optimizer["requests"] * 6000 > 0
    assert optimizer["completion_tokens"] > optimizer["reasoning_tokens"]
    assert optimizer["cost_usd"] == pytest.approx(
        DEFAULT_PRICES["o3"].cost(optimizer["prompt_tokens"], optimizer["completion_tokens"]))
    low = invoke("train", str(config), "--dry-run", "--set", "optimizer.reasoning_effort=low")["typical"][1]
    assert low["cost_usd"] < optimizer["cost_usd"]


OPTIMIZER_REASONING = 2000
OPTIMIZER_CACHED_PROMPT = 8


def thinking_optimizer(body: dict[str, Any]) -> Reply:
    reply = TERMINATE if "multiply" in list_b(body) else add("multiply", MULTIPLY)
    return dataclasses.replace(reply, reasoning_tokens=OPTIMIZER_REASONING,
                               cached_prompt_tokens=OPTIMIZER_CACHED_PROMPT)


@pytest.mark.slow
def test_a_reasoning_optimizer_trains_a_small_agent_against_openai_s_rules(write_config, tmp_path, monkeypatch):
    """o3 optimizes, gpt-4o-mini answers, the server refuses what OpenAI refuses; `show` and `report` count the
    optimizer's reasoning in tokens and dollars."""
    with FakeOpenAI(lambda body: thinking_optimizer(body) if is_optimizer(body) else multiplying_agent(body),
                    reasoning_rules=True) as server:
        data = write_problems(tmp_path / "problems.jsonl", PRODUCTS)
        config = write_config(server.base_url, data, agent={"model": "gpt-4o-mini"},
                              optimizer={"model": "o3", "epochs": 1, "reasoning_effort": "high"})
        result = invoke("train", str(config))
    optimizer_requests = [body for body in server.requests if is_optimizer(body)]
    assert optimizer_requests and all("temperature" not in body and body["reasoning_effort"] == "high"
                                      for body in optimizer_requests)
    assert all(body["temperature"] == 0 for body in server.requests if not is_optimizer(body))
    assert result["status"] == "finished" and result["best_epoch"] == 1

    run = Path(result["run"])
    optimizer_usage = json.loads((run / "run.json").read_text())["usage"]["optimizer"]
    calls = len(optimizer_requests)
    assert optimizer_usage["reasoning_tokens"] == calls * OPTIMIZER_REASONING
    assert optimizer_usage["cached_prompt_tokens"] == calls * OPTIMIZER_CACHED_PROMPT
    o3 = DEFAULT_PRICES["o3"]
    assert optimizer_usage["reasoning_cost_usd"] == pytest.approx(calls * o3.cost(0, OPTIMIZER_REASONING))
    assert optimizer_usage["cost_usd"] > optimizer_usage["reasoning_cost_usd"] > 0

    shown = invoke("show", str(run))
    epoch_usage = shown["epochs"][1]["usage"]["optimizer"]  # the step that made epoch 1
    assert epoch_usage["reasoning_tokens"] == calls * OPTIMIZER_REASONING
    monkeypatch.setattr("agenttrain.cli.out", Console(width=200))  # the table's columns unwrapped
    table = runner.invoke(app, ["show", str(run)]).stdout
    assert "reasoning tok" in table and f"{calls * OPTIMIZER_REASONING}" in table
    assert f"{optimizer_usage['reasoning_cost_usd']:.4f}" in table

    report = Path(invoke("report", str(run))["report"]).read_text()
    assert "of which reasoning" in report
    assert f"| 1 | optimizer | {calls} |" in report and f"| {calls * OPTIMIZER_REASONING} |" in report
