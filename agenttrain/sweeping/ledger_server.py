"""Serving a sweep's ledger to its jobs: a thread of the sweep's process runs an asyncio server, on a Unix socket in a
private folder (jobs on this machine) or on TCP (jobs on Ray nodes), one connection per job process. A job proves it
belongs to the sweep with the address's token. The messages are those of agenttrain.endpoint.shared_limits."""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agenttrain.endpoint.shared_limits import LedgerAddress
from agenttrain.sweeping.ledger import Seat, SweepLedger
from agenttrain.untrusted import loads

STOP_TIMEOUT_S = 10.0


class LedgerServer:
    """The ledger, served from a thread; every change to it happens on that thread's event loop."""

    def __init__(self, ledger: SweepLedger, host: str | None) -> None:
        """`host`: listen on TCP there; None: on a Unix socket."""
        self.ledger = ledger
        self.token = secrets.token_hex(16)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="sweep-ledger-server", daemon=True)
        self._folder = None if host is not None else Path(tempfile.mkdtemp(prefix="agenttrain-sweep-"))  # mode 700
        self._connections: set[asyncio.StreamWriter] = set()
        self._thread.start()
        self._server = self._call(self._listen(host))
        self.address = self._address(host)

    async def _listen(self, host: str | None) -> asyncio.AbstractServer:
        if self._folder is not None:
            return await asyncio.start_unix_server(self._serve, self._folder / "ledger.sock")
        return await asyncio.start_server(self._serve, host, 0)

    def _address(self, host: str | None) -> LedgerAddress:
        if self._folder is not None:
            return LedgerAddress("unix", str(self._folder / "ledger.sock"), self.token)
        port = self._server.sockets[0].getsockname()[1]
        return LedgerAddress("tcp", f"{host}:{port}", self.token)

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(STOP_TIMEOUT_S)

    def budget_spent(self) -> str | None:
        """Why the sweep's budget admits no further request, or None (callable from any thread)."""

        async def ask() -> str | None:
            return self.ledger.budget_refusal()

        return self._call(ask())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            hello = loads(await reader.readline() or b"{}")  # anyone who reaches the TCP port may send this line
        except (OSError, ValueError):
            hello = {}
        if not isinstance(hello, dict) or not hmac.compare_digest(str(hello.get("token", "")), self.token):
            writer.close()
            return
        seat = Seat(str(hello.get("job", "?")), lambda message: writer.write(json.dumps(message).encode() + b"\n"))
        self._connections.add(writer)
        try:
            async for line in reader:
                self._handle(seat, loads(line))
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a job that died mid-message, or sent nonsense: it is dropped like one that exited
        finally:
            self._connections.discard(writer)
            self.ledger.leave(seat)
            writer.close()

    def _handle(self, seat: Seat, message: dict[str, Any]) -> None:
        ledger = self.ledger
        match message["op"]:
            case "acquire":
                ledger.acquire(seat, message["id"], message["endpoint"], int(message["concurrency"]))
            case "release":
                ledger.release(seat, message["endpoint"])
            case "cancel":
                ledger.cancel(seat, message["id"])
            case "charge":
                ledger.charge(float(message["cost_usd"]), int(message["tokens"]))
            case "succeeded":
                ledger.succeeded(message["endpoint"])
            case "rate_limited":
                retry_after = message.get("retry_after_s")
                if held := ledger.rate_limited(message["endpoint"], int(message["generation"]),
                                               None if retry_after is None else float(retry_after)):
                    self.loop.call_later(held, ledger.grant)

    async def _stop(self) -> None:
        self._server.close()
        for writer in list(self._connections):  # jobs that outlive the sweep lose their ledger
            writer.close()
        handlers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        if handlers:
            await asyncio.wait(handlers, timeout=STOP_TIMEOUT_S / 2)

    def close(self) -> None:
        self._call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(STOP_TIMEOUT_S)
        self.loop.close()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)


@contextmanager
def serving(ledger: SweepLedger, host: str | None = None) -> Iterator[LedgerServer]:
    """The ledger served while the block runs: on TCP at `host`, or on a Unix socket when None."""
    server = LedgerServer(ledger, host)
    try:
        yield server
    finally:
        server.close()
