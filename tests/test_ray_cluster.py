"""Ray across nodes: a real cluster of three nodes on this machine (a head and two workers, one CPU each, on the
machine's address), reached as `executor.address: auto` and through Ray Client (`ray://`). Rollouts spread over the
nodes and give a local run's results; a worker node killed mid-epoch costs only its rollout in flight; a GAIA task's
attachments reach the workers through Ray when the driver's data folder is gone; a sweep's jobs on Ray, and the
workers of a local sweep's runs on Ray, share its request limit and budget."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from agenttrain import api  # noqa: E402
from tests.support.fake_openai import FakeOpenAI, Reply  # noqa: E402
from tests.support.ray_nodes import free_port, local_cluster  # noqa: E402
from tests.support.scripted import is_optimizer, question  # noqa: E402
from tests.test_ray_executor import PRODUCTS, config, epochs, parent, world  # noqa: E402
from tests.test_sweep import invoke, responder, two_configs  # noqa: E402
from tests.test_sweep_limits import REQUEST_USD  # noqa: E402
from tests.test_sweep_limits import config as priced_config  # noqa: E402

# tiny workers: a rollout waits on the fake endpoint, so a quarter of a CPU each lets three run on one node
ON_CLUSTER = ["executor.kind=ray", "executor.num_cpus_per_rollout=0.25", "executor.address=auto", "llm.concurrency=3"]
pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def cluster(request):
    """The cluster, which runs connect to by themselves (RAY_ADDRESS for `auto`; the head's client port)."""
    client_port = free_port()
    with ExitStack() as stack:
        # the head's client server, started while pytest captures this process's output, may fail to start the
        # server a ray:// connection needs ("SpecificServer startup failed"): it starts with the capture out of the way
        with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
            nodes = stack.enter_context(local_cluster(3, 1, client_port))
        nodes.client_address = f"ray://{nodes.head_node.node_ip_address}:{client_port}"
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        patch.setenv("RAY_ADDRESS", nodes.address)
        yield nodes


# -- which node a process runs on, seen from /proc --------------------------------------------------------------


def node_of(pid: int, cluster: Cluster) -> Any:
    """The cluster node whose raylet `pid` descends from, or None."""
    raylets = {node.all_processes["raylet"][0].process.pid: node for node in [cluster.head_node, *cluster.worker_nodes]}
    while pid > 1 and pid not in raylets:
        pid = parent(pid)
    return raylets.get(pid)


def processes(prefix: bytes) -> list[int]:
    """Ray names a worker process after the actor it hosts (ray::RolloutWorker, ray::Ledger)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().startswith(prefix):
                found.append(int(cmdline.parent.name))
        except OSError:  # the process ended meanwhile
            continue
    return found


def sender(port: int) -> int | None:
    """The rollout worker whose socket has local port `port`: a request's sender, while the request is open."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    for pid in processes(b"ray::RolloutWorker"):
        try:
            sockets = {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
        except OSError:
            continue
        if any(f"socket:[{inode}]" in sockets for inode in inodes):
            return pid
    return None


class Senders:
    """Notes the node each agent request comes from (the fake records each request's client port)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.server: FakeOpenAI | None = None
        self.nodes: dict[str, set[Any]] = {}  # question -> the nodes that asked about it

    def node(self, body: dict[str, Any]) -> Any:
        assert self.server is not None
        index = next(i for i, sent in enumerate(self.server.requests) if sent is body)
        pid = sender(self.server.ports[index])
        node = None if pid is None else node_of(pid, self.cluster)
        self.nodes.setdefault(question(body), set()).add(node)
        return node


def test_rollouts_spread_over_the_nodes_and_give_the_local_runs_results(cluster, write_config, tmp_path):
    senders = Senders(cluster)
    with world() as server:
        senders.server = server
        local = api.train(config(write_config, server, tmp_path, "cache-local")).run
        plain = server.responder
        server.responder = lambda body: (plain(body), senders.node(body))[0] if not is_optimizer(body) else plain(body)
        on_cluster = api.train(config(write_config, server, tmp_path, "cache-cluster"), ON_CLUSTER).run
    assert epochs(on_cluster) == epochs(local)
    nodes = set().union(*senders.nodes.values())
    assert None not in nodes and len(nodes) == 3  # each node's worker sent requests


def test_a_worker_node_killed_mid_epoch_costs_only_its_rollout_in_flight(cluster, write_config, tmp_path):
    senders, killed = Senders(cluster), threading.Event()
    victim: dict[str, str] = {}

    def agent(body: dict[str, Any]) -> Any:
        node = senders.node(body)
        ledger_nodes = {node_of(pid, cluster) for pid in processes(b"ray::Ledger")}
        if not killed.is_set() and node in cluster.worker_nodes and node not in ledger_nodes:
            killed.set()
            victim["question"] = question(body)
            cluster.remove_node(node, allow_graceful=False)  # the worker, waiting on this reply, dies with its node
        return plain(body)

    baseline_only = ["optimizer.epochs=0"]  # one request per task: every task is asked about once
    with world() as server:
        senders.server = server
        local = api.train(config(write_config, server, tmp_path, "cache-local"), baseline_only).run
        plain = server.responder
        server.responder = lambda body: plain(body) if is_optimizer(body) else agent(body)
        start = len(server.requests)
        # no cache: a worker may store its reply before it dies, and the rerun would replay it for free
        run = api.train(config(write_config, server, tmp_path, "cache-cluster", cache=False),
                        [*ON_CLUSTER, *baseline_only]).run
        asked = [question(b) for b in server.requests[start:] if not is_optimizer(b)]
    cluster.add_node(num_cpus=1)  # back to three nodes for the next test
    assert killed.is_set() and run.info().status == "finished"
    assert sorted(asked) == sorted([p for p, _ in PRODUCTS] + [victim["question"]])  # the victim's ran again, alone
    assert epochs(run) == epochs(local)


def test_ray_client_runs_the_rollouts_on_the_cluster_with_a_local_runs_results(cluster, write_config, tmp_path):
    through_client = [*ON_CLUSTER, f"executor.address={cluster.client_address}"]
    with world() as server:
        local = api.train(config(write_config, server, tmp_path, "cache-local")).run
        on_cluster = api.train(config(write_config, server, tmp_path, "cache-cluster"), through_client).run
    assert epochs(on_cluster) == epochs(local)


# -- attachments -------------------------------------------------------------------------------------------------

SECRETS = {f"00000000-0000-4000-8000-00000000000{n}": f"word{n}" for n in range(1, 4)}


def gaia_folder(root: Path) -> Path:
    """Made-up records in GAIA's format, each with a text attachment that holds its answer."""
    folder = root / "gaia" / "2023" / "validation"
    folder.mkdir(parents=True)
    records = []
    for n, (task_id, secret) in enumerate(SECRETS.items(), start=1):
        (folder / f"note{n}.txt").write_text(f"the word is {secret}\n")
        records.append({"task_id": task_id, "Question": f"Which word does note {n} hold?", "Level": 1,
                        "Final answer": secret, "file_name": f"note{n}.txt", "Annotator Metadata": {}})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root / "gaia"


def test_a_gaia_tasks_attachments_reach_a_worker_that_cannot_see_the_drivers_data_folder(cluster, write_config,
                                                                                        tmp_path):
    data = gaia_folder(tmp_path)
    moved = tmp_path / "moved-away"

    def agent(body: dict[str, Any]) -> Reply:
        if data.exists():  # the driver has loaded the tasks and sent their files: from now on nobody can read them
            data.rename(moved)
        last = str(body["messages"][-1]["content"])
        if found := re.search(r"the word is (\w+)", last):
            return Reply(content=f"FINAL ANSWER: {found[1]}")
        name = re.search(r"The file '([^']+)'", question(body))[1]
        return Reply(content=f"```python\nprint(open({name!r}).read())\n```")

    with FakeOpenAI(lambda body: Reply(content="TERMINATE") if is_optimizer(body) else agent(body)) as server:
        path = write_config(server.base_url, data, task={"name": "gaia", "train_size": 3, "test_size": 0},
                            sandbox={"network": True}, optimizer={"epochs": 0})
        # one rollout at a time: the second and third start after the folder is gone
        run = api.train(path, [*ON_CLUSTER, "llm.concurrency=1"]).run
    assert not data.exists() and moved.exists()
    records = run.snapshot(0).rollouts()
    assert sorted(r.extracted for r in records) == sorted(SECRETS.values())
    assert all(r.correct for r in records)
    shutil.rmtree(moved)


# -- a sweep of Ray tasks ----------------------------------------------------------------------------------------


def test_a_sweeps_jobs_on_ray_nodes_share_its_request_limit(cluster, write_config, tmp_path):
    with FakeOpenAI(responder, latency_s=0.1) as server:
        configs = [str(path) for path in two_configs(write_config, server, tmp_path)]
        result = invoke("sweep", *configs, "--out", str(tmp_path / "sweep"), "--jobs", "2", "--executor", "ray",
                        "--concurrency", "1", "--set", "llm.concurrency=3")
    assert all(row["status"] == "finished" and row["error"] is None for row in result["rows"])
    assert server.max_in_flight == 1


def test_a_local_sweeps_runs_with_rollouts_on_the_cluster_share_its_limit_and_its_budget(cluster, write_config,
                                                                                           tmp_path):
    out = tmp_path / "out"
    with FakeOpenAI(responder, latency_s=0.1) as server:
        path = priced_config(write_config, server, tmp_path)
        result = invoke("sweep", str(path), "--out", str(out), "--seeds", "0,1", "--jobs", "2", "--concurrency", "1",
                        "--max-usd", "5", *(f"--set={setting}" for setting in ON_CLUSTER))
    assert all(row["status"] == "finished" and row["error"] is None for row in result["rows"])
    assert server.max_in_flight == 1  # each run's workers took their slots from the sweep, through its Ray ledger
    spent = json.loads((out / "ledger.json").read_text())["spent"]["cost_usd"]
    assert spent == pytest.approx(len(server.requests) * REQUEST_USD)  # the workers' replies were charged too
