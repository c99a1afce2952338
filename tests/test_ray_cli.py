"""`agenttrain train --set executor.kind=ray` as a user types it: with no address, the run starts a Ray of its
own on this machine and stops it when the run ends."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from agenttrain.rundir.directory import newest_run
from tests.support.fake_openai import FakeOpenAI
from tests.support.files import write_problems
from tests.support.scripted import is_optimizer, multiplying_agent
from tests.test_resume import CLI

pytestmark = pytest.mark.ray

pytest.importorskip("ray")
import ray  # noqa: E402

from agenttrain.errors import UserError  # noqa: E402
from agenttrain.training.executors.ray_cluster import ray_session  # noqa: E402
from tests.support.ray_nodes import free_port  # noqa: E402

PRODUCTS = [(f"What is {a} times 7?", str(a * 7)) for a in range(2, 6)]


def session_processes(session: int) -> list[int]:
    """Processes of a session: whatever the command started and left behind (Ray's own servers included)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == session:
                    found.append(int(entry.name))
            except OSError:  # gone meanwhile
                continue
    return found


@pytest.mark.timeout(300)
def test_a_run_on_ray_without_an_address_starts_a_ray_of_its_own_and_stops_it(write_config, tmp_path):
    with FakeOpenAI(lambda body: "TERMINATE" if is_optimizer(body) else multiplying_agent(body)) as server:
        config = write_config(server.base_url, write_problems(tmp_path / "problems.jsonl", PRODUCTS),
                              task={"train_size": len(PRODUCTS), "test_size": 0}, optimizer={"epochs": 1})
        command = subprocess.Popen([*CLI, "train", str(config), "--set", "executor.kind=ray"], text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        _, stderr = command.communicate(timeout=240)
    assert command.returncode == 0, stderr
    run = newest_run(tmp_path / "runs")
    assert run.info().status == "finished"
    assert len(run.snapshot(0).rollouts()) == len(PRODUCTS)
    deadline = time.monotonic() + 30
    while session_processes(command.pid) and time.monotonic() < deadline:  # Ray's servers take a moment to exit
        time.sleep(0.5)
    assert session_processes(command.pid) == []


@pytest.mark.slow  # Ray's client gives up on an address nobody serves after about 30 s
@pytest.mark.timeout(300)
def test_after_a_ray_address_nobody_serves_a_run_in_the_same_process_still_starts_its_own_ray(tmp_path):
    """A notebook that pointed executor.address at a cluster that was not there can train on a local Ray next."""
    with pytest.raises(UserError, match=r"cannot connect to the Ray cluster at ray://127\.0\.0\.1"), \
            ray_session(f"ray://127.0.0.1:{free_port()}"):
        pass
    with ray_session(None):
        assert ray.cluster_resources().get("CPU", 0) >= 1
