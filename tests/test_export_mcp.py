"""`agenttrain export --format mcp`: a folder that installs in a fresh virtual environment as an MCP server of the
run's functions, which the `mcp` SDK's client and an OpenAI Agents SDK agent then use.

There is no package index here but the machine's own: the fresh environment sees this one's packages (agenttrain
and the MCP SDK) through a .pth file, and pip installs the folder offline without its dependencies.
"""

from __future__ import annotations

import asyncio
import json
import re
import site
import subprocess
import sys
from pathlib import Path

import pytest
from agents import Agent, OpenAIChatCompletionsModel, Runner, set_tracing_disabled
from agents.mcp import MCPServerStdio
from mcp import Client, StdioServerParameters
from openai import AsyncOpenAI
from typer.testing import CliRunner

from agenttrain.cli import app
from agenttrain.config import SandboxConfig
from agenttrain.sandbox import Sandbox
from tests.support.fake_openai import FakeOpenAI, Reply, text, tool_call
from tests.support.run_factory import story_run

pytestmark = pytest.mark.slow


def install_fresh(folder: Path, venv: Path) -> Path:
    """`pip install FOLDER` into a new venv that sees this environment's packages; returns its bin folder."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    fresh_site = next((venv / "lib").glob("python3*/site-packages"))
    (fresh_site / "outer_environment.pth").write_text(f"import site; site.addsitedir({site.getsitepackages()[0]!r})\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
                    "--no-index", "--no-deps", "--no-build-isolation", str(folder)], check=True, timeout=300)
    return venv / "bin"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The story run's best epoch (multiply, divide) exported and installed: (the folder, the server script)."""
    if not Sandbox(SandboxConfig()).describe()["isolation"]["sealed"]:
        pytest.skip("the sandbox cannot be sealed on this machine, so the exported server refuses to start")
    root = tmp_path_factory.mktemp("mcp-export")
    result = CliRunner().invoke(app, ["export", str(story_run(root).path), "--format", "mcp",
                                      "--out", str(root / "story-mcp"), "--json"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    written = json.loads(result.stdout)
    return Path(written["path"]), install_fresh(Path(written["path"]), root / "venv") / written["script"]


def test_the_folder_declares_its_server_and_what_it_needs(exported: tuple[Path, Path]) -> None:
    folder, _ = exported
    project = (folder / "pyproject.toml").read_text()
    assert 'story-mcp = "story_mcp.server:main"' in project
    # divide declared `fractions`, which is the standard library's
    assert re.search(r'^dependencies = \["agenttrain\[mcp\]>=[0-9.]+"\]$', project, re.MULTILINE), project
    readme = (folder / "README.md").read_text()
    assert '"mcpServers"' in readme and "MCPServerStdio" in readme and "- `multiply`: Multiply" in readme


def test_the_installed_server_lists_and_runs_the_same_tools(exported: tuple[Path, Path]) -> None:
    _, script = exported

    async def scenario() -> tuple[list[str], str]:
        async with Client(StdioServerParameters(command=str(script)), read_timeout_seconds=120) as client:
            tools = [tool.name for tool in (await client.list_tools()).tools]
            result = await client.call_tool("divide", {"a": 1, "b": 3})
            return tools, result.content[0].text

    assert asyncio.run(scenario()) == (["multiply", "divide"], "1/3")


def test_an_agents_sdk_agent_answers_through_the_exported_server(exported: tuple[Path, Path]) -> None:
    _, script = exported

    def model(body: dict) -> Reply:
        """Calls multiply, then answers with what it returned (the SDK sends a tool's output as content parts)."""
        results = [m["content"] for m in body["messages"] if m["role"] == "tool"]
        if not results:
            return tool_call("multiply", {"a": 6, "b": 7})
        parts = results[-1] if isinstance(results[-1], list) else [{"text": results[-1]}]
        return text(f"6 times 7 is {''.join(part['text'] for part in parts)}.")

    async def scenario(base_url: str) -> str:
        set_tracing_disabled(True)  # no traces to OpenAI's servers
        llm = OpenAIChatCompletionsModel("agent-model", AsyncOpenAI(base_url=base_url, api_key="sk-test"))
        async with MCPServerStdio(params={"command": str(script)}, client_session_timeout_seconds=120) as tools:
            agent = Agent(name="solver", instructions="Use the tools.", model=llm, mcp_servers=[tools])
            return str((await Runner.run(agent, "What is 6 times 7?")).final_output)

    with FakeOpenAI(model) as server:
        answer = asyncio.run(scenario(server.base_url))
    assert answer == "6 times 7 is 42."
    offered = [tool["function"]["name"] for tool in server.requests[0]["tools"]]
    assert offered == ["multiply", "divide"]
