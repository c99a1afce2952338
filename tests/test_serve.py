"""`agenttrain serve`: a run's functions as MCP tools, driven through the `mcp` SDK's own client over stdio and HTTP.

Each transport starts one real server process on a run whose functions include a raising one, a slow one, and
hostile ones; the tests below read what the client saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from agenttrain.config import SandboxConfig
from agenttrain.functions import FunctionSet, build_function
from agenttrain.rundir.directory import RunDir
from agenttrain.sandbox import Sandbox
from agenttrain.serving.source import load_served
from tests.support.run_factory import MULTIPLY, experiment, rollout, save_epoch

pytestmark = pytest.mark.slow

AGENTTRAIN = str(Path(sys.executable).parent / "agenttrain")
SECRET = "TOP-SECRET-7f3a"
TOKEN = "a-long-random-test-token"


def function(name: str, code: str, parameters: dict[str, Any] | None = None) -> Any:
    return build_function(name, f"The {name} function.", parameters or {}, "", code)


def hostile_run(root: Path, secret: Path, port: int) -> RunDir:
    """A run whose best epoch holds multiply and four functions a user must be protected from or told about."""
    functions = [
        MULTIPLY,
        function("fail", "def fail():\n    raise ValueError('no such thing')\n"),
        function("slow", "def slow():\n    while True:\n        pass\n"),
        function("read_secret", f"def read_secret():\n    return open({str(secret)!r}).read()\n"),
        function("phone_home", "import socket\n\n\ndef phone_home():\n"
                 f"    socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'hi')\n"
                 "    return 'sent'\n"),
    ]
    tight = experiment(root).model_copy(update={"sandbox": SandboxConfig(timeout_s=2, warm_workers=1)})
    run = RunDir.create(tight)
    save_epoch(run, 0, functions, "baseline", [rollout("t1", True)], 1.0)
    return run


@dataclass
class Seen:
    """What the client saw: the tool list and each tool's result, in the order called."""

    tools: dict[str, Any]
    results: dict[str, Any]
    after_timeout: Any  # multiply, called again once `slow` was stopped
    refused: list[int] | None = None  # http: the statuses of a request without the token and with a wrong one


async def drive(client: Client) -> Seen:
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    results = {"multiply": await client.call_tool("multiply", {"a": 6, "b": 7})}
    for name in ("fail", "slow", "read_secret", "phone_home"):
        results[name] = await client.call_tool(name, {})
    return Seen(tools, results, await client.call_tool("multiply", {"a": 2, "b": 21}))


def over_stdio(run: RunDir) -> Seen:
    async def scenario() -> Seen:
        async with Client(StdioServerParameters(command=AGENTTRAIN, args=["serve", str(run.path)]),
                          read_timeout_seconds=120) as client:
            return await drive(client)

    return asyncio.run(scenario())


@contextlib.contextmanager
def http_server(path: Path, *options: str, token: str | None = TOKEN) -> Iterator[str]:
    """`agenttrain serve --transport http` on a free port; yields the URL it printed, stops it with Ctrl-C."""
    env = {**os.environ, "AGENTTRAIN_MCP_TOKEN": token} if token else dict(os.environ)
    server = subprocess.Popen([AGENTTRAIN, "serve", str(path), "--transport", "http", "--port", "0", *options],
                              stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = server.stderr.readline() if server.stderr else ""
        found = re.search(r"(http://\S+/mcp)", line)
        assert found, line + (server.stderr.read() if server.stderr else "")
        yield found[1]
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(30)


def over_http(run: RunDir) -> Seen:
    async def scenario(url: str) -> Seen:
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120) as http, \
                Client(streamable_http_client(url, http_client=http)) as client:
            return await drive(client)

    with http_server(run.path) as url:
        refused = [httpx2.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).status_code,
                   httpx2.post(url, json={}, headers={"Authorization": "Bearer not-the-token"}).status_code]
        seen = asyncio.run(scenario(url))
    seen.refused = refused
    return seen


@pytest.fixture(scope="module")
def listener() -> Iterator[socket.socket]:
    """A port on this machine's loopback that hostile code tries to reach."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        yield server


@pytest.fixture(scope="module", params=["stdio", "http"])
def seen(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, listener: socket.socket) -> Seen:
    if not Sandbox(SandboxConfig()).describe()["isolation"]["sealed"]:
        pytest.skip("the sandbox cannot be sealed on this machine, so `serve` refuses to start (as training does)")
    root = tmp_path_factory.mktemp(request.param)
    secret = root / "secret.txt"
    secret.write_text(SECRET)
    run = hostile_run(root, secret, listener.getsockname()[1])
    return over_stdio(run) if request.param == "stdio" else over_http(run)


def text(result: Any) -> str:
    return "\n".join(block.text for block in result.content)


def test_every_learned_function_is_a_tool_with_its_description_and_schema(seen: Seen) -> None:
    assert list(seen.tools) == ["multiply", "fail", "slow", "read_secret", "phone_home"]
    multiply = seen.tools["multiply"]
    assert multiply.description == "Multiply two numbers exactly."
    assert multiply.input_schema == {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                                     "required": ["a", "b"]}


def test_a_call_returns_what_the_function_returned(seen: Seen) -> None:
    assert text(seen.results["multiply"]) == "42" and not seen.results["multiply"].is_error


def test_a_function_that_raises_is_a_tool_error_with_its_message(seen: Seen) -> None:
    assert seen.results["fail"].is_error
    assert "ValueError: no such thing" in text(seen.results["fail"])


def test_a_call_past_the_timeout_is_a_tool_error_and_the_server_goes_on(seen: Seen) -> None:
    assert seen.results["slow"].is_error and text(seen.results["slow"]) == "Error: timeout after 2s"
    assert text(seen.after_timeout) == "42"


def test_hostile_code_cannot_read_files_outside_its_folder(seen: Seen) -> None:
    assert seen.results["read_secret"].is_error
    assert SECRET not in text(seen.results["read_secret"])


def test_hostile_code_cannot_reach_the_network(seen: Seen, listener: socket.socket) -> None:
    assert seen.results["phone_home"].is_error
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody connected


def test_over_http_a_request_without_the_token_is_refused(seen: Seen) -> None:
    if seen.refused is None:
        pytest.skip("stdio has no token: the client starts the server itself")
    assert seen.refused == [401, 401]


@pytest.mark.parametrize(("arguments", "message"), [
    (["--transport", "http", "--host", "0.0.0.0"], "--host 0.0.0.0: serving beyond this machine needs a token"),
    (["--transport", "carrier-pigeon"], "--transport 'carrier-pigeon': choose one of stdio, http"),
])
def test_bad_serve_options_get_one_line_before_anything_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                arguments: list[str], message: str) -> None:
    monkeypatch.delenv("AGENTTRAIN_MCP_TOKEN", raising=False)
    run = RunDir.create(experiment(tmp_path))
    result = subprocess.run([AGENTTRAIN, "serve", str(run.path), *arguments], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1


def test_serving_a_run_that_hands_environment_variables_to_its_code_says_which(tmp_path: Path, caplog,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    handing = experiment(tmp_path)
    handing = handing.model_copy(update={"sandbox": SandboxConfig(env_allow=["OPENAI_API_KEY", "UNSET_HERE"],
                                                                  network=True)})
    run = RunDir.create(handing)
    save_epoch(run, 0, FunctionSet(), "baseline", [rollout("t1", True)], 1.0)
    load_served(run.path)
    assert "the functions' code gets $OPENAI_API_KEY from this environment (sandbox.env_allow), with network" \
        in caplog.text and "UNSET_HERE" not in caplog.text
