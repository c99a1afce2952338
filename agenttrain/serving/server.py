"""The MCP server on the official SDK's low-level `Server`: tools/list and tools/call answered by FunctionTools,
over stdio (what Claude Desktop and most clients start) or streamable HTTP (served by uvicorn)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import mcp_types as types
import uvicorn
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

from agenttrain.errors import UserError
from agenttrain.serving.access import BearerToken
from agenttrain.serving.source import Served
from agenttrain.serving.tools import FunctionTools

HTTP_PATH = "/mcp"


def mcp_server(served: Served, tools: FunctionTools) -> Server[Any]:
    async def list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools.list())

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        return await tools.call(params.name, params.arguments)

    return Server(served.name, version=version("agenttrain"), on_list_tools=list_tools, on_call_tool=call_tool,
                  instructions=f"Functions learned by agenttrain ({served.origin}).")


async def serve_stdio(served: Served) -> None:
    # The sandbox starts once stdio is claimed: its processes then inherit a stdout that is not the wire.
    async with stdio_server() as (read, write), FunctionTools.open(served) as tools:
        server = mcp_server(served, tools)
        await server.run(read, write, server.create_initialization_options())


async def serve_http(served: Served, host: str, port: int, token: str | None,
                     on_ready: Callable[[str], None]) -> None:
    """Serve until cancelled; `on_ready` gets the URL once the port is bound (port 0 picks a free one)."""
    try:
        listener = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as exc:
        raise UserError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc}); pick another "
                        "port, or 0 for a free one") from None
    async with FunctionTools.open(served) as tools:
        app: Any = mcp_server(served, tools).streamable_http_app(streamable_http_path=HTTP_PATH, host=host)
        if token:
            app = BearerToken(app, token)
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        bound_host, bound_port = listener.getsockname()[:2]
        on_ready(f"http://{f'[{bound_host}]' if ':' in bound_host else bound_host}:{bound_port}{HTTP_PATH}")
        await uvicorn.Server(config).serve(sockets=[listener])


def serve(served: Served, transport: str, host: str, port: int, token: str | None,
          on_ready: Callable[[str], None]) -> None:
    """Serve until the client closes stdin (stdio) or Ctrl-C (http)."""
    if transport == "stdio":
        asyncio.run(serve_stdio(served))
    else:
        asyncio.run(serve_http(served, host, port, token, on_ready))
