"""`agenttrain serve`: a run's learned functions as an MCP server, each call run in our sandbox.

source.py finds what to serve (an epoch of a run, or a folder written by `export --format mcp`), tools.py turns
the functions into MCP tools and runs each call in a sandbox session sealed as in training, server.py puts them
on the official `mcp` SDK over stdio or streamable HTTP, access.py guards HTTP with a bearer token. The SDK is
the optional extra `agenttrain[mcp]`, imported only here.
"""

from __future__ import annotations

from agenttrain.serving.source import Served, load_served

TRANSPORTS = ("stdio", "http")

__all__ = ["TRANSPORTS", "Served", "load_served"]
