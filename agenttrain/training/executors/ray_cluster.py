"""Connecting to Ray for one run: the cluster at `executor.address`, or a local instance started for the run."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import ray

from agenttrain.errors import UserError


@contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Connected to Ray inside the block: the cluster at `address` ("auto", "ray://HOST:PORT", "HOST:PORT"), or,
    for None, a Ray started here. A program (or test) that connected already keeps its session; a session
    opened here is closed afterwards (a local instance stops with it)."""
    if ray.is_initialized():
        yield
        return
    try:
        if address is None:
            # loopback only, no dashboard: a private instance for this run that nobody else should reach
            ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False,
                     _node_ip_address="127.0.0.1", logging_level=logging.WARNING)
        else:
            ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        ray.shutdown()  # a ray:// connection that failed leaves Ray in client mode, where no later session could start
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise UserError(f"cannot connect to {where}: {exc}. Start it (`ray start --head` on the head node), "
                        "fix the address, or run locally (executor.kind: local; sweep --executor local)") from None
    try:
        yield
    finally:
        ray.shutdown()


def cluster_cpus() -> float:
    return float(ray.cluster_resources().get("CPU", 0))
