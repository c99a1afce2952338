"""Sessions that try to outlast, outgrow or reach past their sandbox: System V IPC, busy children and threads, CPU,
and the host's own services over the network. Each is asserted where `describe()` says it is enforced."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agenttrain.config import SandboxConfig
from agenttrain.functions import FunctionSet
from agenttrain.sandbox import ExecResult, Sandbox, network
from tests.test_sandbox import REPO, run_blocks, with_sandbox

pytestmark = pytest.mark.slow  # each test opens sandbox sessions

IPC_KINDS = ("msg", "shm", "sem")


@pytest.fixture(scope="module")
def enforced() -> dict[str, Any]:
    """What a started sandbox enforces on this machine (cgroups are made when it starts)."""

    async def described(sandbox: Sandbox) -> dict[str, Any]:
        return sandbox.describe()

    return with_sandbox(described)


def ipc_keys(kind: str, proc: Path = Path("/proc")) -> set[int]:
    """The keys of the System V objects of one kind that this process's IPC namespace holds."""
    lines = (proc / "sysvipc" / kind).read_text().splitlines()[1:]
    return {int(line.split()[0]) for line in lines if line.strip()}


def make_ipc(key: int) -> str:
    return (
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        f"made = [libc.msgget({key}, 0o1666), libc.shmget({key}, 4096, 0o1666), libc.semget({key}, 1, 0o1666)]\n"
        "print(all(m >= 0 for m in made))"
    )


def seen_keys(key: int) -> str:
    return (
        f"print([kind for kind in {IPC_KINDS!r} if any(line.split()[0] == '{key}' "
        "for line in open(f'/proc/sysvipc/{kind}').read().splitlines()[1:])])"
    )


def remove_host_ipc(key: int) -> None:
    """Clean up after a sandbox that leaked into the host's IPC namespace (the failure this test looks for)."""
    for flag in ("-Q", "-M", "-S"):
        os.system(f"ipcrm {flag} {key} >/dev/null 2>&1")


def test_sessions_share_no_system_v_ipc_and_leave_none_behind(enforced: dict[str, Any]) -> None:
    if not enforced["isolation"]["ipc_namespace"]:
        pytest.skip(f"no IPC namespace on this machine: {enforced['isolation']['notes']}")
    key = 0x4A000000 + secrets.randbelow(1 << 20)

    async def scenario(sandbox: Sandbox) -> tuple[list[ExecResult], dict[str, bool], list[ExecResult]]:
        async with sandbox.session(FunctionSet()) as a, sandbox.session(FunctionSet()) as b:
            made = [await a.run_code(make_ipc(key)), await a.run_code(seen_keys(key))]
            host_during = {kind: key in ipc_keys(kind) for kind in IPC_KINDS}
            other = [await b.run_code(seen_keys(key))]
        return made, host_during, other

    try:
        (made, in_a), host_during, (in_b,) = with_sandbox(scenario)
        host_after = {kind: key in ipc_keys(kind) for kind in IPC_KINDS}
    finally:
        remove_host_ipc(key)
    assert made.output == "True\n"
    assert in_a.output == f"{list(IPC_KINDS)}\n"  # the session sees its own objects
    assert in_b.output == "[]\n"  # another session sees none of them
    assert not any(host_during.values()) and not any(host_after.values())


# --- busy processes and threads -------------------------------------------------------------------------

START_BUSY_WORK = """
import os, threading
def spin():
    while True:
        pass
child = os.fork()
if child == 0:
    spin()
threading.Thread(target=spin, daemon=True).start()
"""
CPU_SO_FAR = """
import os
def cpu_s(pid):
    fields = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')
print(cpu_s(child) + cpu_s(os.getpid()))
"""


def test_children_and_threads_left_busy_by_a_call_burn_no_cpu_until_the_next_call() -> None:
    """Between calls (while the model thinks) nothing of the session runs; the next call finds its state."""
    gap_s = 1.5

    async def scenario(sandbox: Sandbox) -> tuple[float, float, ExecResult]:
        async with sandbox.session(FunctionSet()) as session:
            await session.run_code(START_BUSY_WORK)
            before = float((await session.run_code(CPU_SO_FAR)).output)
            await asyncio.sleep(gap_s)
            after = float((await session.run_code(CPU_SO_FAR)).output)
            alive = await session.run_code("print(os.waitpid(child, os.WNOHANG) == (0, 0))")
        return before, after, alive

    before, after, alive = with_sandbox(scenario, timeout_s=10)
    assert after - before < 0.3 * gap_s, f"{after - before:.2f} s of CPU while no call ran"
    assert alive.output == "True\n"  # stopped, not killed: a background process is still there for the next call


def test_a_session_cannot_take_more_cpu_than_its_share(enforced: dict[str, Any]) -> None:
    if not enforced["cpu"]["enforced"]:
        pytest.skip(f"no CPU cgroup here: {enforced['cpu']['how']}")
    wall_s, cpus = 2.0, 0.25
    spin = (
        "import os, time\npids = []\nfor _ in range(3):\n    pid = os.fork()\n    if pid == 0:\n"
        f"        end = time.monotonic() + {wall_s}\n        while time.monotonic() < end:\n            pass\n"
        "        os._exit(0)\n    pids.append(pid)\nfor pid in pids:\n    os.waitpid(pid, 0)\n"
        "times = os.times()\nprint(times.children_user + times.children_system)"
    )
    (result,) = run_blocks(spin, cpus=cpus, timeout_s=20)
    used_s = float(result.output)
    assert used_s < 2 * cpus * wall_s, f"3 spinning processes used {used_s:.2f} s of CPU in {wall_s} s"


# --- network: the web, not the host ----------------------------------------------------------------------


def host_addresses() -> list[str]:
    """This machine's own addresses, loopback first, as the sandbox must not reach them."""
    found = ["127.0.0.1", "::1"]
    for line in Path("/proc/net/if_inet6").read_text().splitlines():
        raw, scope = line.split()[0], line.split()[3]
        if scope == "00":  # global scope: not link-local, not loopback
            found.append(":".join(raw[i : i + 4] for i in range(0, 32, 4)))
    with contextlib.suppress(OSError):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface's address
        found.append(probe.getsockname()[0])
        probe.close()
    return [a for i, a in enumerate(found) if a not in found[:i]]


@contextlib.contextmanager
def listening(addresses: list[str]) -> Iterator[dict[str, int]]:
    """A TCP server on each address that accepts and closes connections; address -> port."""
    servers: dict[str, socket.socket] = {}
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        server = socket.socket(family, socket.SOCK_STREAM)
        try:
            server.bind((address, 0))
        except OSError:
            server.close()
            continue
        server.listen()
        server.settimeout(0.2)
        servers[address] = server
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            for server in servers.values():
                with contextlib.suppress(OSError):
                    server.accept()[0].close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield {address: server.getsockname()[1] for address, server in servers.items()}
    finally:
        stop.set()
        thread.join()
        for server in servers.values():
            server.close()


def connect_all(ports: dict[str, int]) -> str:
    return (
        "import socket\nreached = []\n"
        f"for address, port in {ports!r}.items():\n"
        "    try:\n        socket.create_connection((address, port), timeout=2).close()\n"
        "        reached.append(address)\n    except OSError:\n        pass\nprint(reached)"
    )


def test_with_network_the_code_reaches_none_of_the_hosts_own_services() -> None:
    described = Sandbox(SandboxConfig(network=True)).describe()["network"]
    if not described["host_services_unreachable"]:
        pytest.skip(f"the host's services are reachable from the sandbox here: {described['how']}")
    with listening(host_addresses()) as ports:
        time.sleep(0.1)
        reach_from_here = [a for a, p in ports.items() if socket.create_connection((a, p), timeout=2)]
        (result, route, resolver) = run_blocks(
            connect_all(ports), "print(any(l.split()[1] == '00000000' for l in open('/proc/net/route')))",
            "print(open('/etc/resolv.conf').read())", network=True, timeout_s=20,
        )  # fmt: skip
    assert reach_from_here == list(ports)  # the servers are up
    assert "127.0.0.1" in ports and len(ports) >= 2
    assert result.output == "[]\n", f"reached from the sandbox: {result.output}"
    assert route.output == "True\n"  # it has a way out: a default route
    assert resolver.output == f"nameserver {network.NAMESERVER}\n\n"  # names resolve through it, not the LAN's server


def test_network_true_is_described_as_what_it_is() -> None:
    described = Sandbox(SandboxConfig(network=True)).describe()["network"]
    assert described["allowed"] is True
    assert isinstance(described["host_services_unreachable"], bool) and described["how"]


# --- the same, for a user who is not root ------------------------------------------------------------------

AS_NON_ROOT = """
import asyncio, json, os, socket, sys, threading, time
from agenttrain.config import SandboxConfig
from agenttrain.functions import FunctionSet
from agenttrain.sandbox import Sandbox

blocks = json.loads(sys.argv[1])
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
threading.Thread(target=lambda: [server.accept()[0].close() for _ in range(10)], daemon=True).start()

async def main():
    sandbox = Sandbox(SandboxConfig(network=True, timeout_s=10))
    await sandbox.start()
    try:
        async with sandbox.session(FunctionSet()) as a, sandbox.session(FunctionSet()) as b:
            outputs = {"made": (await a.run_code(blocks["make"])).output,
                       "other": (await b.run_code(blocks["seen"])).output,
                       "reached": (await a.run_code(blocks["connect"] % server.getsockname()[1])).output}
            await a.run_code(blocks["busy"])
            before = float((await a.run_code(blocks["cpu"])).output)
            await asyncio.sleep(1.5)
            outputs["cpu_between_calls"] = float((await a.run_code(blocks["cpu"])).output) - before
        return {"uid": os.geteuid(), "outputs": outputs, "sandbox": sandbox.describe()}
    finally:
        await sandbox.close()

print(json.dumps(asyncio.run(main())))
"""


def test_a_non_root_users_sessions_get_the_same_ipc_network_and_between_call_confinement(tmp_path: Path) -> None:
    as_user = [] if os.geteuid() else ["unshare", "--user", "--map-user=1000", "--map-group=1000"]
    if as_user and subprocess.run([*as_user, "true"], capture_output=True).returncode != 0:
        pytest.skip("this machine allows no user namespace, so no non-root user could confine a sandbox")
    key = 0x4B000000 + secrets.randbelow(1 << 20)
    connect = (
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', %d), timeout=2)\n    print('reached')\n"
        "except OSError as exc:\n    print(type(exc).__name__)"
    )
    blocks = {"make": make_ipc(key), "seen": seen_keys(key), "connect": connect, "busy": START_BUSY_WORK,
              "cpu": CPU_SO_FAR}  # fmt: skip
    try:
        finished = subprocess.run([*as_user, sys.executable, "-c", AS_NON_ROOT, json.dumps(blocks)],
                                  capture_output=True, text=True, cwd=REPO, timeout=120)  # fmt: skip
    finally:
        remove_host_ipc(key)
    assert finished.returncode == 0, finished.stderr
    report = json.loads(finished.stdout)
    assert report["uid"] != 0 and report["sandbox"]["isolation"]["user_namespace"]
    outputs = report["outputs"]
    assert (outputs["made"], outputs["other"]) == ("True\n", "[]\n")
    assert outputs["cpu_between_calls"] < 0.5
    if report["sandbox"]["network"]["host_services_unreachable"]:
        assert outputs["reached"] != "reached\n"
    else:
        assert network.find_slirp4netns() is None, report["sandbox"]["network"]["how"]
