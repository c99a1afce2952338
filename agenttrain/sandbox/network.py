"""`sandbox.network: true` (GAIA's web search): the web, not this machine's own services.

Where slirp4netns is installed (Debian/Ubuntu package `slirp4netns`), a session gets a network namespace of its
own whose only way out is slirp4netns, a user-space network stack that makes the session's connections as
ordinary sockets of the host; `--disable-host-loopback` keeps it from reaching the host's loopback (the LLM
endpoint, the viewer, the embedded model, Ray's ports), and routes in the session's namespace make the host's
other addresses, link-local addresses (cloud metadata services) and private ranges (the LAN, a cluster's other
nodes) unreachable. The code cannot change them: it holds no capability. slirp4netns, a process of the session
that ends with it, parses the code's packets, so it runs confined too: a seccomp filter always, and as root an
empty root and no capability (`--enable-sandbox`, which it cannot do from our user namespace when we are not).

Without slirp4netns the session shares the host's network, which `describe()` reports: a seccomp filter cannot
read the address a `connect()` names (it sees only the pointer), so there is no sound in-process filter to use.
Standard library only: this runs in the session's supervisor.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import select
import shutil
import socket
import struct
from pathlib import Path
from typing import NoReturn

from agenttrain.sandbox import isolation as confine

SLIRP4NETNS = "slirp4netns"
TAP = "tap0"
NAMESERVER = "10.0.2.3"  # slirp4netns's forwarder to the host's resolvers (which may sit on a private address)
READY_TIMEOUT_S = 10
UNREACHABLE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10")
# rtnetlink: a route of type "unreachable" in the main table, so a connect() fails at once with EHOSTUNREACH.
RTM_NEWROUTE, NLMSG_ERROR = 24, 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNREACHABLE, RTA_DST = 254, 4, 0, 7, 1
NLMSGHDR, RTMSG, RTATTR = struct.Struct("=IHHII"), struct.Struct("=BBBBBBBBI"), struct.Struct("=HH")


def find_slirp4netns() -> str | None:
    return shutil.which(SLIRP4NETNS, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/bin", "/usr/local/bin"]))


class WebNetwork:
    """slirp4netns for the namespace the supervisor is about to make: a helper forked while we are still in the
    host's network (and mount) namespace waits until `connect` lets it exec slirp4netns into the new one."""

    def __init__(self, helper: int, go: int, ready: int, blocked: list[str]) -> None:
        self._helper, self._go, self._ready, self.blocked = helper, go, ready, blocked

    @classmethod
    def prepare(cls, slirp4netns: str | None, supervisor_pid: int) -> WebNetwork | None:
        """Call before unsharing the network namespace; `supervisor_pid` as the host's /proc names us."""
        if slirp4netns is None:
            return None
        blocked = blocked_prefixes()  # read now: /proc/net shows the host's network until we unshare
        go_read, go_write = os.pipe()
        ready_read, ready_write = os.pipe()
        helper = os.fork()
        if helper == 0:
            _run_helper(slirp4netns, supervisor_pid, go_read, ready_write, keep={go_read, ready_write})
        os.close(go_read)
        os.close(ready_write)
        return cls(helper, go_write, ready_read, blocked)

    def connect(self) -> None:
        """In the new namespace, with its capabilities: start slirp4netns, wait until the way out is up, then make
        the host's addresses and private ranges unreachable. Raises OSError if any of it fails."""
        try:
            os.write(self._go, b"1")
            if not select.select([self._ready], [], [], READY_TIMEOUT_S)[0] or os.read(self._ready, 1) != b"1":
                raise OSError(f"{SLIRP4NETNS} did not start")
        finally:
            self.close()
        add_unreachable_routes(self.blocked)

    def close(self) -> None:
        """Let go of the helper (it ends if `connect` never ran); the worker must not inherit these pipes."""
        for fd in (self._go, self._ready):
            if fd >= 0:
                os.close(fd)
        self._go = self._ready = -1


def _run_helper(slirp4netns: str, target_pid: int, go: int, ready: int, keep: set[int]) -> NoReturn:
    """The helper: nothing of the supervisor's but its two pipes; exec once the namespace exists."""
    confine.die_with_parent()  # kept across exec: slirp4netns ends with the session even without a PID namespace
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    for fd in map(int, os.listdir("/proc/self/fd")):
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)
    options = ["--configure", "--mtu=65520", "--disable-host-loopback", "--enable-seccomp", f"--ready-fd={ready}"]
    try:
        if os.read(go, 1) == b"1":
            if os.geteuid() == 0:
                options.append("--enable-sandbox")
            else:  # it joins the session's network namespace, which our user namespace owns
                confine.keep_capabilities_across_exec((confine.CAP_SYS_ADMIN, confine.CAP_NET_ADMIN,
                                                       confine.CAP_SYS_PTRACE))  # fmt: skip
            os.set_inheritable(ready, True)
            os.execv(slirp4netns, [slirp4netns, *options, str(target_pid), TAP])
    finally:
        os._exit(127)


def blocked_prefixes() -> list[str]:
    """The host's own IPv4 addresses (but loopback, which is the session's own in its namespace), and the ranges
    that are never the web. IPv6 needs nothing: the session's namespace has no IPv6 way out."""
    own = sorted(host_ipv4_addresses() - {a for a in host_ipv4_addresses() if a.startswith("127.")})
    return [f"{address}/32" for address in own] + list(UNREACHABLE_RANGES)


def host_ipv4_addresses() -> set[str]:
    """Every local IPv4 address of this network namespace, from the kernel's routing table."""
    found, last = set(), None
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/fib_trie").read_text().splitlines():
            words = line.split()
            if len(words) == 2 and words[0] == "|--":
                last = words[1]
            elif "/32 host LOCAL" in line and last is not None:
                found.add(last)
    return found


def add_unreachable_routes(prefixes: list[str]) -> None:
    """Add an `unreachable` route for each IPv4 prefix to this namespace's main table (needs CAP_NET_ADMIN here)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as netlink:
        for sequence, prefix in enumerate(prefixes, 1):
            network = ipaddress.IPv4Network(prefix)
            attribute = RTATTR.pack(RTATTR.size + 4, RTA_DST) + network.network_address.packed
            route = RTMSG.pack(socket.AF_INET, network.prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC,
                               RT_SCOPE_UNIVERSE, RTN_UNREACHABLE, 0)  # fmt: skip
            flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
            body = route + attribute
            netlink.send(NLMSGHDR.pack(NLMSGHDR.size + len(body), RTM_NEWROUTE, flags, sequence, 0) + body)
            _check_ack(netlink.recv(4096), prefix)


def _check_ack(reply: bytes, prefix: str) -> None:
    _, kind, _, _, _ = NLMSGHDR.unpack_from(reply)
    if kind != NLMSG_ERROR:
        raise OSError(f"unexpected netlink reply {kind} adding a route to {prefix}")
    (error,) = struct.unpack_from("=i", reply, NLMSGHDR.size)
    if error:
        raise OSError(-error, f"cannot make {prefix} unreachable: {os.strerror(-error)}")
