"""A Ray cluster of several nodes on this machine (a head and workers, each its own raylet and object store on the
machine's address), for the tests and the benches. It leaves the machine's "latest cluster" as it found it: a plain
`ray.init()` elsewhere on the machine (another test run) must not join it."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from ray._common.utils import reset_ray_address
from ray._private.utils import read_ray_address, write_ray_address
from ray.cluster_utils import Cluster


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _restore_latest(latest: str | None) -> None:
    if latest is None:
        reset_ray_address()
    else:
        write_ray_address(latest)


@contextmanager
def local_cluster(nodes: int, cpus_per_node: int, client_port: int | None = None) -> Iterator[Cluster]:
    """`nodes` nodes (the head counts), `cpus_per_node` logical CPUs each; with `client_port`, the head serves Ray
    Client (ray://) there. RAY_ADDRESS=cluster.address reaches it."""
    latest = read_ray_address()
    head: dict[str, object] = {"num_cpus": cpus_per_node, "include_dashboard": False}
    if client_port is not None:
        head["ray_client_server_port"] = client_port
    cluster = Cluster(initialize_head=True, head_node_args=head)
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=cpus_per_node)
        cluster.wait_for_nodes()
        _restore_latest(latest)  # the cluster made itself the latest
        yield cluster
    finally:
        cluster.shutdown()
        _restore_latest(latest)  # shutting down forgets the latest, whichever it was
