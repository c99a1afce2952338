"""Riding out an endpoint outage: work that failed on the endpoint is tried again after a growing wait,
until `llm.max_outage_s` passes without any of it getting through; then the run stops, resumable."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from agenttrain.endpoint.client import EndpointDown


class OutageTimer:
    """Counts how long retried work has been failing without progress; `wait` sleeps before the next try."""

    def __init__(
        self,
        max_outage_s: float,
        notify: Callable[[str], None] | None = None,
        first_wait_s: float = 1.0,
        max_wait_s: float = 30.0,
    ) -> None:
        self.max_outage_s = max_outage_s
        self.notify = notify
        self.first_wait_s = first_wait_s
        self.max_wait_s = max_wait_s
        self._since: float | None = None  # when the failing started; None while work gets through
        self._waits = 0

    def progressed(self) -> None:
        """Some of the work got through: the endpoint is up, the outage clock starts again."""
        self._since, self._waits = None, 0

    async def wait(self, what: str, error: str) -> None:
        """Sleep before trying `what` again; raises EndpointDown once the outage outlasts `max_outage_s`."""
        now = time.monotonic()
        self._since = now if self._since is None else self._since
        elapsed = now - self._since
        if elapsed >= self.max_outage_s:
            raise EndpointDown(
                f"the endpoint kept failing for {elapsed:.0f}s (llm.max_outage_s={self.max_outage_s:g}); "
                f"last error: {error}. Check that the server is up and accepts the model and parameters"
            )
        delay = min(self.max_wait_s, self.first_wait_s * 2**self._waits, self.max_outage_s - elapsed)
        self._waits += 1
        if self.notify:
            self.notify(f"endpoint failing ({error}); retrying {what} in {delay:.0f}s, giving up after "
                        f"{self.max_outage_s:g}s without progress (llm.max_outage_s)")
        await asyncio.sleep(delay)
