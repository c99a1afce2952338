"""What the jobs of one sweep share: one request limit per endpoint and the sweep's budget (`sweep --concurrency`,
`--max-usd`, `--max-tokens`). Bookkeeping only: ledger_server.py feeds it the jobs' messages, and the jobs' side is
agenttrain.endpoint.shared_limits.

Slots. Per endpoint, one AIMD limit for the whole sweep: `--concurrency`, or when unset the jobs' own
`llm.concurrency` times the jobs run at once (what they would send apart). A rate limit that any job meets halves it
once, and its Retry-After holds every job's requests; successes regain it (endpoint.client.AIMDLimit). A free slot
goes to the waiting job that holds the fewest slots of that endpoint (the earliest request among equals), so the jobs
progress at the same rate and none starves behind a busier one.

Budget. A request is admitted only if the sweep's spend, plus the dearest reply so far for each request in flight
and for this one, stays within the limits; otherwise it waits for those in flight, and is refused once nothing is in
flight and it still does not fit. The sweep's first request goes alone, so that a reply's cost is known before more
are admitted. The sweep thus ends within its budget, unless a reply costs more than every one before it.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from agenttrain.endpoint.client import AIMDLimit
from agenttrain.errors import UserError

Answer = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class SweepLimits:
    max_usd: float | None = None  # the sweep's spend in all, every invocation of it counted
    max_tokens: int | None = None
    concurrency: int | None = None  # requests in flight per endpoint, all jobs together

    def __post_init__(self) -> None:
        for option, value in (("--max-usd", self.max_usd), ("--max-tokens", self.max_tokens),
                              ("--concurrency", self.concurrency)):
            if value is not None and value <= 0:
                raise UserError(f"{option} {value:g}: give a number above 0, or leave {option} out for no limit")

    @property
    def budgeted(self) -> bool:
        return self.max_usd is not None or self.max_tokens is not None


@dataclass
class Spend:
    usd: float = 0.0
    tokens: int = 0

    def __add__(self, other: Spend) -> Spend:
        return Spend(self.usd + other.usd, self.tokens + other.tokens)


class SweepBudget:
    def __init__(self, limits: SweepLimits, spent: Spend) -> None:
        self.limits = limits
        self.spent = spent
        self.dearest = Spend()  # the highest cost and token count of one reply so far
        self.measured = False  # a reply has been charged, so `dearest` means something

    def charge(self, usd: float, tokens: int) -> None:
        self.spent += Spend(usd, tokens)
        self.dearest = Spend(max(self.dearest.usd, usd), max(self.dearest.tokens, tokens))
        self.measured = True

    def verdict(self, in_flight: int) -> Literal["admit", "wait", "refuse"]:
        """May one more request go, with `in_flight` requests out whose cost is not known yet?"""
        if not self.limits.budgeted:
            return "admit"
        if self.measured:
            fits = self._within(self.spent.usd + (in_flight + 1) * self.dearest.usd,
                                self.spent.tokens + (in_flight + 1) * self.dearest.tokens)
        else:  # what a reply costs is not known yet: one request alone, while anything is left
            fits = in_flight == 0 and self._within(self.spent.usd, self.spent.tokens, strictly=True)
        if fits:
            return "admit"
        return "wait" if in_flight else "refuse"

    def _within(self, usd: float, tokens: int, strictly: bool = False) -> bool:
        limits = self.limits
        if limits.max_usd is not None and (usd >= limits.max_usd if strictly else usd > limits.max_usd):
            return False
        return limits.max_tokens is None or (tokens < limits.max_tokens if strictly else tokens <= limits.max_tokens)

    def refusal(self) -> str:
        spent = []
        if self.limits.max_usd is not None:
            spent.append(f"${self.spent.usd:.4f} of --max-usd {self.limits.max_usd:g}")
        if self.limits.max_tokens is not None:
            spent.append(f"{self.spent.tokens} of --max-tokens {self.limits.max_tokens} tokens")
        return (f"the sweep's budget is spent: {', '.join(spent)} (one request may cost up to "
                f"${self.dearest.usd:.4f}, {self.dearest.tokens} tokens); rerun the sweep with a larger limit to "
                "continue its runs")


class EndpointSlots(AIMDLimit):
    """One endpoint's request slots, and how many each job holds."""

    def __init__(self, ceiling: int) -> None:
        super().__init__(ceiling)
        self.held: Counter[str] = Counter()
        self.granted = 0
        self.rate_limits = 0  # the halvings

    @property
    def in_flight(self) -> int:
        return sum(self.held.values())

    def free(self) -> bool:
        return self.in_flight < int(self.limit) and not self.held_for()

    def widen(self, ceiling: int) -> None:
        """A job that would send more at once joined: the default limit follows it."""
        if ceiling > self.ceiling:
            self.limit += ceiling - self.ceiling
            self.ceiling = ceiling


@dataclass(eq=False)
class Seat:
    """One connected process: the job it works for, how it is answered, and the slots it holds."""

    job: str
    answer: Answer
    held: Counter[str] = field(default_factory=Counter)


@dataclass(eq=False)
class Waiting:
    arrival: int
    seat: Seat
    id: int  # the seat's number for this request
    endpoint: str
    since: float = field(default_factory=time.monotonic)


@dataclass
class JobShare:
    """What one job got of the shared slots."""

    requests: int = 0
    waited_s: float = 0.0  # for a slot, all its requests together
    contended: int = 0  # slots it was given while other jobs waited for one too
    owed: float = 0.0  # its fair part of the slots given while it waited with others

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "slot_wait_s": self.waited_s / max(self.requests, 1),
                "contended_slots": round(self.owed, 1),
                "fair_share": self.contended / self.owed if self.owed else None}


class SweepLedger:
    def __init__(self, limits: SweepLimits, jobs_at_once: int, spent: Spend) -> None:
        self.limits = limits
        self.jobs_at_once = jobs_at_once
        self.budget = SweepBudget(limits, spent)
        self.endpoints: dict[str, EndpointSlots] = {}
        self.waiting: list[Waiting] = []
        self.shares: dict[str, JobShare] = defaultdict(JobShare)
        self._arrivals = itertools.count()

    @property
    def in_flight(self) -> int:
        return sum(slots.in_flight for slots in self.endpoints.values())

    def acquire(self, seat: Seat, request: int, endpoint: str, concurrency: int) -> None:
        """Answer `request` with a slot of `endpoint` once one is free and the budget allows, or with a refusal."""
        ceiling = self.limits.concurrency or self.jobs_at_once * concurrency
        if endpoint not in self.endpoints:
            self.endpoints[endpoint] = EndpointSlots(ceiling)
        elif self.limits.concurrency is None:
            self.endpoints[endpoint].widen(ceiling)
        self.waiting.append(Waiting(next(self._arrivals), seat, request, endpoint))
        self.grant()

    def cancel(self, seat: Seat, request: int) -> None:
        self.waiting = [w for w in self.waiting if not (w.seat is seat and w.id == request)]

    def release(self, seat: Seat, endpoint: str) -> None:
        if seat.held[endpoint] > 0:
            seat.held[endpoint] -= 1
            self.endpoints[endpoint].held[seat.job] -= 1
            self.grant()

    def charge(self, usd: float, tokens: int) -> None:
        self.budget.charge(usd, tokens)

    def succeeded(self, endpoint: str) -> None:
        self.endpoints[endpoint].on_success()
        self.grant()  # the limit may have grown by a slot

    def rate_limited(self, endpoint: str, generation: int, retry_after_s: float | None) -> float:
        """A job's request met a rate limit; returns how long the endpoint's Retry-After holds every request (then
        call `grant`)."""
        slots = self.endpoints[endpoint]
        slots.rate_limits += generation == slots.generation
        slots.rate_limited(generation, slots.in_flight, retry_after_s)
        return slots.held_for()

    def leave(self, seat: Seat) -> None:
        """The process is gone: its waiting requests are dropped and its slots freed."""
        self.waiting = [w for w in self.waiting if w.seat is not seat]
        for endpoint, count in seat.held.items():
            self.endpoints[endpoint].held[seat.job] -= count
        seat.held.clear()
        self.grant()

    def budget_refusal(self) -> str | None:
        """Why no further request can be admitted at all, or None."""
        return None if self.budget.verdict(0) == "admit" else self.budget.refusal()

    def report(self) -> dict[str, Any]:
        """What the sweep spent, where each endpoint's limit settled, and what each job got (OUT/ledger.json)."""
        return {
            "spent": {"cost_usd": self.budget.spent.usd, "tokens": self.budget.spent.tokens},
            "limits": asdict(self.limits),
            "endpoints": {endpoint: {"limit": int(slots.limit), "ceiling": slots.ceiling, "requests": slots.granted,
                                     "rate_limits": slots.rate_limits}
                          for endpoint, slots in self.endpoints.items()},
            # contended_slots: its fair part of the slots given while it waited with other jobs; fair_share: the slots
            # it was given then, over that part (1.0: its due)
            "jobs": {job: share.to_dict() for job, share in sorted(self.shares.items())},
        }

    def grant(self) -> None:
        """Give free slots to the waiting requests, as far as the limits and the budget allow."""
        while True:
            ready = [w for w in self.waiting if self.endpoints[w.endpoint].free()]
            if not ready:
                return
            verdict = self.budget.verdict(self.in_flight)
            if verdict == "wait":
                return
            if verdict == "refuse":
                for waiting in self.waiting:
                    waiting.seat.answer({"id": waiting.id, "refused": self.budget.refusal()})
                self.waiting.clear()
                return
            chosen = min(ready, key=lambda w: (self.endpoints[w.endpoint].held[w.seat.job], w.arrival))
            self.waiting.remove(chosen)
            slots = self.endpoints[chosen.endpoint]
            slots.held[chosen.seat.job] += 1
            slots.granted += 1
            chosen.seat.held[chosen.endpoint] += 1
            self._account(chosen, {w.seat.job for w in ready if w.endpoint == chosen.endpoint})
            chosen.seat.answer({"id": chosen.id, "endpoint": chosen.endpoint, "generation": slots.generation})

    def _account(self, chosen: Waiting, contenders: set[str]) -> None:
        share = self.shares[chosen.seat.job]
        share.requests += 1
        share.waited_s += time.monotonic() - chosen.since
        if len(contenders) > 1:
            share.contended += 1
            for job in contenders:
                self.shares[job].owed += 1 / len(contenders)
