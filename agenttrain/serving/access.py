"""Who may reach the HTTP server: loopback by default; any other address only with a bearer token, checked on
every request before the MCP app sees it."""

from __future__ import annotations

import ipaddress
import secrets
from typing import Any

from agenttrain.errors import UserError

Scope = dict[str, Any]
ASGIApp = Any  # (scope, receive, send) -> awaitable


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_binding(host: str, token: str | None) -> None:
    if not is_loopback(host) and not token:
        raise UserError(f"--host {host}: serving beyond this machine needs a token that clients must send; "
                        "set AGENTTRAIN_MCP_TOKEN (or --token) to a long random string")


class BearerToken:
    """ASGI middleware: a request without `Authorization: Bearer <token>` gets 401 and never reaches the app."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not self._authorised(scope):
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")]})
            await send({"type": "http.response.body", "body": b"missing or wrong bearer token\n"})
            return
        await self.app(scope, receive, send)

    def _authorised(self, scope: Scope) -> bool:
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        return secrets.compare_digest(given, self.expected)
