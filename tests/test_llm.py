import asyncio
import socket
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import pytest

from agenttrain.config import BudgetConfig, LLMConfig, ModelParams, Price
from agenttrain.endpoint.cache import ResponseCache
from agenttrain.endpoint.client import ChatReply, EndpointDown, LLMClient, LLMError, retry_after_seconds
from agenttrain.endpoint.usage import BudgetExhausted, UsageMeter
from tests.support.fake_openai import FakeOpenAI, Fault, Reply, text, tool_call

KEY_ENV = "AGENTTRAIN_TEST_KEY"
# one change to each model parameter: each changes the reply, so each must miss the response cache
PARAM_CHANGES = {"temperature": 0.7, "max_tokens": 10, "reasoning_effort": "low", "top_p": 0.5, "seed": 1,
                 "extra_body": {"top_k": 5}}
TOOL = {"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}


def make_client(
    base_url: str,
    *,
    meter: UsageMeter | None = None,
    cache: ResponseCache | None = None,
    **settings: Any,
) -> LLMClient:
    config = LLMConfig(base_url=base_url, api_key_env=KEY_ENV, **{"max_retries": 2, **settings})
    meter = meter or UsageMeter(BudgetConfig(), {})
    return LLMClient(config, role="agent", meter=meter, cache=cache, backoff_s=0.01)


async def ask(client: LLMClient, question: str = "hi", **options: Any) -> ChatReply:
    return await client.chat([{"role": "user", "content": question}], model="m", **options)


def run(scenario: Callable[[LLMClient], Any], base_url: str, **client_options: Any) -> Any:
    """Runs `scenario(client)` on a fresh event loop and closes the client."""

    async def main() -> Any:
        client = make_client(base_url, **client_options)
        try:
            return await scenario(client)
        finally:
            await client.close()

    return asyncio.run(main())


def failing_first(count: int, fault: Fault, then: Reply | str = "ok") -> Callable[[dict], Reply | Fault | str]:
    """A responder that fails the first `count` requests, then answers."""
    seen = [0]

    def responder(body: dict) -> Reply | Fault | str:
        seen[0] += 1
        return fault if seen[0] <= count else then

    return responder


def test_reply_is_a_plain_assistant_message():
    with FakeOpenAI(lambda body: text("4")) as server:
        reply = run(ask, server.base_url)
    assert reply.message == {"role": "assistant", "content": "4"}
    assert (reply.finish_reason, reply.prompt_tokens, reply.completion_tokens, reply.cached) == ("stop", 10, 5, False)


def test_tool_calls_are_returned_as_json_ready_dicts():
    with FakeOpenAI(lambda body: tool_call("f", {"x": 1})) as server:
        reply = run(lambda c: ask(c, tools=[TOOL]), server.base_url)
    assert reply.finish_reason == "tool_calls"
    assert reply.message["tool_calls"] == [
        {"id": "call_1_0", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    ]
    assert server.requests[0]["tools"] == [TOOL]


def test_rate_limit_waits_for_retry_after():
    with FakeOpenAI(failing_first(1, Fault(429, retry_after=0.3))) as server:
        started = time.monotonic()
        reply = run(ask, server.base_url)
        elapsed = time.monotonic() - started
    assert reply.message["content"] == "ok"
    assert len(server.requests) == 2
    assert elapsed >= 0.25  # the backoff alone would be 0.01 s


NO_MESSAGE = {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
              "choices": [{"index": 0, "finish_reason": "stop"}]}
NULL_USAGE = {**NO_MESSAGE, "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant",
              "content": "hi"}}], "usage": {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None}}
STRING_MESSAGE = {**NO_MESSAGE, "choices": [{"index": 0, "finish_reason": "stop", "message": "hi"}]}


@pytest.mark.parametrize(
    "fault",
    [Fault(500), Fault(503), Fault(malformed=True), Fault(body=NO_MESSAGE), Fault(body=NULL_USAGE),
     Fault(body=STRING_MESSAGE), Fault(body={"error": None}), Fault(reset=True)],
    ids=["500", "503", "malformed", "no-message", "null-usage", "string-message", "no-choices", "reset"],
)
def test_transient_failure_is_retried(fault):
    with FakeOpenAI(failing_first(1, fault)) as server:
        reply = run(ask, server.base_url)
    assert reply.message["content"] == "ok"
    assert len(server.requests) == 2


@pytest.mark.slow
def test_timeout_is_retried_then_fails_the_request():
    with FakeOpenAI(lambda body: Fault(200, delay_s=1.0)) as server, pytest.raises(LLMError, match=r"timeout_s=0\.2"):
        run(ask, server.base_url, timeout_s=0.2, max_retries=1)
    assert len(server.requests) == 2


def test_exhausted_retries_fail_the_request():
    with FakeOpenAI(lambda body: Fault(500)) as server, pytest.raises(LLMError, match=r"3 attempt\(s\): HTTP 500"):
        run(ask, server.base_url, max_retries=2)
    assert len(server.requests) == 3


@pytest.mark.slow
def test_other_client_errors_fail_the_request_without_retry():
    with FakeOpenAI(lambda body: Fault(400)) as server, pytest.raises(LLMError, match="HTTP 400"):
        run(ask, server.base_url)
    assert len(server.requests) == 1


def test_rejected_key_stops_the_run_naming_the_variable():
    with FakeOpenAI(lambda body: Fault(401)) as server, pytest.raises(EndpointDown, match=KEY_ENV):
        run(ask, server.base_url)
    assert len(server.requests) == 1


def test_unknown_model_stops_the_run_naming_it():
    with FakeOpenAI(lambda body: Fault(404)) as server, pytest.raises(EndpointDown, match=r"model 'm'.*llm\.base_url"):
        run(ask, server.base_url)


def test_exhausted_credit_stops_the_run_without_retry():
    out_of_credit = Fault(429, code="insufficient_quota")
    with FakeOpenAI(lambda body: out_of_credit) as server, pytest.raises(EndpointDown, match="no credit"):
        run(ask, server.base_url)
    assert len(server.requests) == 1


def test_a_request_that_keeps_failing_fails_alone_and_every_request_is_still_sent():
    async def scenario(client: LLMClient) -> list[str]:
        outcomes = []
        for question in ["a", "b", "c"]:
            try:
                await ask(client, question)
            except LLMError as exc:
                outcomes.append(str(exc))
        return outcomes

    with FakeOpenAI(lambda body: Fault(503)) as server:
        outcomes = run(scenario, server.base_url, max_retries=0)
        assert len(outcomes) == 3 and f"{server.base_url}/chat/completions" in outcomes[0]
        assert len(server.requests) == 3  # how long to wait out an outage is the caller's call (OutageTimer)


def test_unreachable_endpoint_names_the_url():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(LLMError, match=rf"{url}/chat/completions.*cannot connect"):
        run(ask, url, max_retries=1)


@pytest.mark.slow
def test_concurrency_limit_is_respected():
    async def scenario(client: LLMClient) -> None:
        await asyncio.gather(*(ask(client, f"q{i}") for i in range(10)))

    with FakeOpenAI(lambda body: "ok", latency_s=0.05) as server:
        run(scenario, server.base_url, concurrency=3)
    assert server.max_in_flight == 3


@pytest.mark.slow
def test_a_rate_limit_halves_concurrency_and_successes_win_it_back_at_once_then_slowly():
    async def scenario(client: LLMClient) -> list[int]:
        limits = []
        for i in range(121):
            await ask(client, f"q{i}")
            limits.append(int(client.limiter.limit))
        return limits

    with FakeOpenAI(failing_first(1, Fault(429, retry_after=0))) as server:
        limits = run(scenario, server.base_url, concurrency=4)
    # struck at 4 (one request out: not a limit on requests in flight, so at the limit), halved to 2; the retry's
    # success gives back a slot at once (up to just below 4), then 4 itself takes about 8 x 3.5² more successes: a
    # probe past where the endpoint refused
    assert (limits[0], limits[60], limits[120]) == (3, 3, 4)


@pytest.mark.slow
def test_a_burst_of_rate_limits_halves_concurrency_once():
    async def scenario(client: LLMClient) -> int:
        await asyncio.gather(*(ask(client, f"q{i}") for i in range(4)), return_exceptions=True)
        return int(client.limiter.limit)

    with FakeOpenAI(lambda body: Fault(429), latency_s=0.05) as server:
        assert run(scenario, server.base_url, concurrency=4, max_retries=0) == 2
    assert server.max_in_flight == 4


def test_retry_after_accepts_seconds_milliseconds_and_dates():
    assert retry_after_seconds({"retry-after": "1.5"}) == 1.5
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    in_two_seconds = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=2), usegmt=True)
    assert 0.5 < retry_after_seconds({"retry-after": in_two_seconds}) <= 2.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


# --- the cache ---


def test_identical_request_is_served_from_the_cache(tmp_path):
    meter = UsageMeter(BudgetConfig(), {})

    async def scenario(client: LLMClient) -> list[ChatReply]:
        return [await ask(client), await ask(client)]

    with FakeOpenAI(lambda body: "ok") as server:
        first, second = run(scenario, server.base_url, cache=ResponseCache(tmp_path), meter=meter)
    assert len(server.requests) == 1
    assert second.cached and not first.cached and second.message == first.message
    usage = meter.by_role()["agent"]
    assert (usage.requests, usage.cache_hits, usage.prompt_tokens) == (1, 1, 10)


@pytest.mark.parametrize(
    "variation",
    [{"sample_index": 1}, {"tools": [TOOL]}, {"stop": ["\n"]},
     *({"params": ModelParams(**{name: value})} for name, value in PARAM_CHANGES.items())],
    ids=["sample_index", "tools", "stop", *PARAM_CHANGES],
)
def test_any_change_to_the_request_misses_the_cache(tmp_path, variation):
    async def scenario(client: LLMClient) -> ChatReply:
        await ask(client)
        return await ask(client, **variation)

    with FakeOpenAI(lambda body: "ok") as server:
        reply = run(scenario, server.base_url, cache=ResponseCache(tmp_path))
    assert not reply.cached and len(server.requests) == 2


@pytest.mark.slow
def test_cache_survives_reopening(tmp_path):
    with FakeOpenAI(lambda body: "ok") as server:
        run(ask, server.base_url, cache=ResponseCache(tmp_path))
        reply = run(ask, server.base_url, cache=ResponseCache(tmp_path))
    assert reply.cached and len(server.requests) == 1


def test_failures_are_never_cached(tmp_path):
    async def scenario(client: LLMClient) -> ChatReply:
        with pytest.raises(LLMError):
            await ask(client)
        await ask(client)
        return await ask(client)

    with FakeOpenAI(failing_first(1, Fault(500))) as server:
        reply = run(scenario, server.base_url, cache=ResponseCache(tmp_path), max_retries=0)
    assert reply.cached and len(server.requests) == 2


# --- the budget ---


def test_budget_stops_before_the_request_that_would_exceed_it(tmp_path):
    # 10 prompt tokens at $1000 per million: each request costs $0.01
    meter = UsageMeter(BudgetConfig(max_usd=0.02), {"m": Price(input=1000, output=0)})

    async def scenario(client: LLMClient) -> ChatReply:
        await ask(client, "a")
        await ask(client, "b")
        with pytest.raises(BudgetExhausted, match=r"max_usd.*\$0\.0200"):
            await ask(client, "c")
        return await ask(client, "a")  # already paid for: the cache still answers

    with FakeOpenAI(lambda body: "ok") as server:
        reply = run(scenario, server.base_url, meter=meter, cache=ResponseCache(tmp_path))
    assert len(server.requests) == 2
    assert reply.cached
    assert meter.total().cost_usd == pytest.approx(0.02)


def test_clients_share_one_meter_per_run():
    meter = UsageMeter(BudgetConfig(), {"m": Price(input=1000, output=1000)})

    async def scenario(base_url: str) -> None:
        config = LLMConfig(base_url=base_url)
        for role in ("agent", "optimizer"):
            client = LLMClient(config, role=role, meter=meter, cache=None)
            await ask(client)
            await client.close()

    with FakeOpenAI(lambda body: "ok") as server:
        asyncio.run(scenario(server.base_url))
    roles = meter.by_role()
    assert roles["agent"].requests == roles["optimizer"].requests == 1
    assert meter.total().cost_usd == pytest.approx(2 * 15 * 1000 / 1e6)


def test_requests_are_deterministic():
    with FakeOpenAI(lambda body: "ok") as server:
        run(ask, server.base_url)
        run(ask, server.base_url)
    assert server.requests[0] == server.requests[1]
