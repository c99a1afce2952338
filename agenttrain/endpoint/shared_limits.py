"""Request limits and a budget shared by the processes of one sweep: the job's side of the sweep's ledger.

A sweep keeps, for all its jobs together, one request limit per endpoint and the sweep's budget
(agenttrain.sweeping.ledger). A job process joins it once (`join`); from then on every LLM client it makes takes its
request slots from the ledger, whose admission also keeps the sweep within its budget (a refusal is BudgetExhausted,
so the run stops as `budget_exhausted`), and every reply its meters record is charged to the sweep. A Ray run's
ledger actor joins on its job's behalf.

One connection per process, served by a thread of its own, so that every event loop of the process (a job trains,
then evaluates, each in its own `asyncio.run`) and plain functions (the meter) can use it. Messages are lines of
JSON on one socket, so the ledger reads a reply's charge before the release of the slot it was spent in. When the
process dies, its socket closes and the ledger frees its slots.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from dataclasses import dataclass
from typing import Any, Literal

from agenttrain.config import LLMConfig
from agenttrain.endpoint.client import share_request_limits
from agenttrain.endpoint.usage import BudgetExhausted, report_spending
from agenttrain.errors import UserError

LEDGER_ENV = "AGENTTRAIN_SWEEP_LEDGER"  # how a sweep hands its ledger's address to the job processes it starts
CONNECT_TIMEOUT_S = 10.0
OPENAI_URL = "https://api.openai.com/v1"  # the openai client's default base URL


@dataclass(frozen=True)
class LedgerAddress:
    """Where a sweep's ledger listens: a Unix socket (jobs on this machine) or TCP (jobs on Ray nodes), and the
    token a job proves it belongs to the sweep with."""

    kind: Literal["unix", "tcp"]
    where: str  # the socket's path, or HOST:PORT
    token: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.where}#{self.token}"

    @classmethod
    def parse(cls, text: str) -> LedgerAddress:
        kind, _, rest = text.partition(":")
        where, _, token = rest.rpartition("#")
        if kind not in ("unix", "tcp") or not where or not token:
            raise UserError(f"${LEDGER_ENV}={text!r}: not a sweep ledger's address (unix:PATH#TOKEN or "
                            "tcp:HOST:PORT#TOKEN); it is set by `agenttrain sweep` for its jobs only")
        return cls(kind, where, token)  # type: ignore[arg-type]


def endpoint_key(settings: LLMConfig) -> str:
    """What the ledger calls an endpoint: its URL and the variable holding the key (another key, another quota)."""
    return f"{(settings.resolved_base_url() or OPENAI_URL).rstrip('/')} ${settings.api_key_env}"


class LedgerLink:
    """This process's connection to the sweep's ledger, on a thread with its own event loop."""

    def __init__(self, address: LedgerAddress, job: str) -> None:
        self.address = address
        self.job = job
        self.loop = asyncio.new_event_loop()
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}  # answers awaited, by request id
        self._ids = itertools.count()
        self._writer: asyncio.StreamWriter | None = None
        self._lost: str | None = None  # why the connection ended, once it has
        threading.Thread(target=self.loop.run_forever, name="sweep-ledger", daemon=True).start()
        try:
            asyncio.run_coroutine_threadsafe(self._connect(), self.loop).result(CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise UserError(f"cannot reach the sweep's ledger at {address.kind}:{address.where} ({exc}); "
                            "jobs are started by `agenttrain sweep`, which must still be running") from None

    async def _connect(self) -> None:
        if self.address.kind == "unix":
            reader, self._writer = await asyncio.open_unix_connection(self.address.where)
        else:
            host, _, port = self.address.where.rpartition(":")
            reader, self._writer = await asyncio.open_connection(host, int(port))
        self._write({"op": "hello", "token": self.address.token, "job": self.job})
        self.loop.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            async for line in reader:
                answer = json.loads(line)
                waiter = self._pending.pop(answer["id"], None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(answer)
                elif "generation" in answer:  # a slot granted to a request cancelled meanwhile: give it back
                    self._write({"op": "release", "endpoint": answer["endpoint"]})
        except (OSError, ValueError) as exc:
            self._lost = str(exc)
        self._lost = self._lost or "the connection closed"
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_exception(self._gone())
        self._pending.clear()

    def _gone(self) -> UserError:
        return UserError(f"lost the sweep's ledger at {self.address.kind}:{self.address.where} ({self._lost}): the "
                         "sweep stopped; rerun it to continue this run")

    def _write(self, message: dict[str, Any]) -> None:
        if self._writer is not None and self._lost is None:
            self._writer.write(json.dumps(message).encode() + b"\n")

    def tell(self, message: dict[str, Any]) -> None:
        """Send without waiting for an answer, from any thread; messages keep the order they were told in."""
        self.loop.call_soon_threadsafe(self._write, message)

    async def _ask(self, message: dict[str, Any]) -> dict[str, Any]:
        if self._lost:
            raise self._gone()
        number = next(self._ids)
        answer = self._pending[number] = self.loop.create_future()
        self._write({**message, "id": number})
        try:
            return await answer
        except asyncio.CancelledError:
            if self._pending.pop(number, None) is not None:
                self._write({"op": "cancel", "id": number})
            raise

    async def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        """The ledger's answer, awaited from any event loop; cancelling the caller withdraws the request."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._ask(message), self.loop))

    def charge(self, cost_usd: float, tokens: int) -> None:
        self.tell({"op": "charge", "cost_usd": cost_usd, "tokens": tokens})

    def slots(self, endpoint: str, concurrency: int) -> SharedSlots:
        return SharedSlots(self, endpoint, concurrency)


class SharedSlots:
    """A `RequestLimiter` whose slots are the ledger's for one endpoint, for every job of the sweep together;
    admission also keeps the sweep within its budget."""

    def __init__(self, link: LedgerLink, endpoint: str, concurrency: int) -> None:
        self.link = link
        self.endpoint = endpoint
        self.concurrency = concurrency  # this client's own llm.concurrency: the ledger's default limit follows it

    async def __aenter__(self) -> int:
        answer = await self.link.ask({"op": "acquire", "endpoint": self.endpoint, "concurrency": self.concurrency})
        if "refused" in answer:
            raise BudgetExhausted(answer["refused"])
        return int(answer["generation"])

    async def __aexit__(self, *exc: object) -> None:
        self.link.tell({"op": "release", "endpoint": self.endpoint})

    def on_success(self) -> None:
        self.link.tell({"op": "succeeded", "endpoint": self.endpoint})

    def on_rate_limit(self, generation: int, retry_after_s: float | None = None) -> None:
        self.link.tell({"op": "rate_limited", "endpoint": self.endpoint, "generation": generation,
                        "retry_after_s": retry_after_s})


_joined: LedgerLink | None = None


def join(address: str | LedgerAddress, job: str) -> LedgerLink:
    """From now on this process spends from the sweep's ledger: its LLM clients' request slots and its budget."""
    global _joined
    link = LedgerLink(address if isinstance(address, LedgerAddress) else LedgerAddress.parse(address), job)
    share_request_limits(lambda settings: link.slots(endpoint_key(settings), settings.concurrency))
    report_spending(link.charge)
    _joined = link
    return link


def joined() -> LedgerLink | None:
    """The sweep ledger this process spends from, if it is a sweep's job."""
    return _joined
