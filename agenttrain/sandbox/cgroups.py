"""Memory and CPU caps for a session's whole process tree, with a cgroup per session.

The trainer finds the hierarchies it may write (`SessionCgroups.create`); each session's supervisor makes its
own cgroup in each and joins them before it starts anything (`join_session`),
so every process of the session, including those that leave its process tree, counts against one `memory.max`
and one CPU quota (`sandbox.cpus`: a spinning session gets that many CPUs, however many processes and threads it
runs, and whether or not the kernel groups processes by session itself, its autogroup). cgroup v2 is used where
its controllers can be enabled for us; else cgroup v1's (hybrid machines, one hierarchy per controller); else
nothing, and the sandbox falls back to per-process limits. Standard library only: the session side runs in the
session's supervisor.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MB = 1024 * 1024
PREFIX = "agenttrain-"
CONTROLLERS = ("memory", "cpu")
CPU_PERIOD_US = 100_000
MIN_CPU_QUOTA_US = 1000  # the kernel's floor


@dataclass(frozen=True)
class Hierarchy:
    version: int  # 1 or 2
    own: Path  # this process's cgroup in that hierarchy
    controllers: tuple[str, ...]  # of CONTROLLERS, those this hierarchy gives us


def _mounts() -> list[tuple[str, str, list[str]]]:
    """(mount point, file system type, super options) of each mount, from /proc/self/mountinfo."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, after = line.split(" - ", 1)
        fstype, _source, options = after.split(" ")[:3]
        mounts.append((before.split(" ")[4], fstype, options.split(",")))
    return mounts


def _own_paths() -> dict[str, str]:
    """Our cgroup path per hierarchy: '' for the v2 one, else each v1 controller's name."""
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            paths[controller] = path
    return paths


def find_hierarchies() -> list[Hierarchy]:
    """Where this process can make child cgroups with our controllers: v2 for those it has, v1 for the rest."""
    try:
        mounts, own = _mounts(), _own_paths()
    except OSError:
        return []
    found: list[Hierarchy] = []
    for point, fstype, _options in mounts:
        if fstype == "cgroup2" and "" in own:
            path = Path(point + own[""])
            available = _read(path / "cgroup.controllers").split()
            controllers = tuple(c for c in CONTROLLERS if c in available)
            if controllers:
                found.append(Hierarchy(2, path, controllers))
            break
    for point, fstype, options in mounts:
        taken = {c for h in found for c in h.controllers}
        controllers = tuple(c for c in CONTROLLERS if c in options and c in own and c not in taken)
        if fstype == "cgroup" and controllers:
            found.append(Hierarchy(1, Path(point + own[controllers[0]]), controllers))
    return found


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _write(path: Path, value: str) -> None:
    path.write_text(value)


class SessionCgroups:
    """Where the trainer's sessions make their cgroups; None from `create` where no hierarchy lets us.

    A session's cgroup sits directly in the trainer's own, named after the trainer and the session's supervisor
    (`agenttrain-<trainer pid>-<supervisor pid>`), not under a parent of all sessions: the CPU scheduler then
    weighs each session as one, as it weighs a process group of its own (the kernel's autogroup), and a burst of
    sessions gets no less of the machine than it did without cgroups.
    """

    def __init__(self, hierarchies: list[Hierarchy]) -> None:
        self._hierarchies = hierarchies
        self._prefix = f"{PREFIX}{os.getpid()}-"
        self._busy: set[int] = set()  # ended sessions whose cgroups still had processes being killed

    @classmethod
    def create(cls) -> tuple[SessionCgroups | None, dict[str, str]]:
        """The trainer's hierarchies, or None; and per controller, where it is or why it is not available."""
        how = {c: f"no cgroup with a {c} controller is available to us" for c in CONTROLLERS}
        usable = []
        for hierarchy in find_hierarchies():
            _remove_abandoned(hierarchy.own)
            where = f"cgroup v{hierarchy.version} under {hierarchy.own}"
            try:
                _enable(hierarchy)
            except OSError as exc:
                how.update({c: f"cannot make a {where} with a {c} controller: {exc}" for c in hierarchy.controllers})
                continue
            usable.append(hierarchy)
            how.update({c: where for c in hierarchy.controllers})
        return (cls(usable) if usable else None), how

    def has(self, controller: str) -> bool:
        return any(controller in hierarchy.controllers for hierarchy in self._hierarchies)

    def settings(self) -> list[dict[str, Any]]:
        """What a session's supervisor needs to join (see join_session)."""
        return [{"parent": str(h.own), "prefix": self._prefix, "version": h.version, "controllers": list(h.controllers)}
                for h in self._hierarchies]  # fmt: skip

    def remove(self, supervisor_pid: int) -> None:
        """Kill what is left of an ended session, even processes that left its process tree, and remove its
        cgroups (or, if its processes are still dying, at a later call)."""
        self._busy.add(supervisor_pid)
        for session in list(self._busy):
            try:
                for hierarchy in self._hierarchies:
                    _remove(hierarchy.own / f"{self._prefix}{session}")
            except OSError:
                continue
            self._busy.discard(session)

    def close(self) -> None:
        for hierarchy in self._hierarchies:
            for path in hierarchy.own.glob(f"{self._prefix}*"):
                with contextlib.suppress(OSError):  # still has processes: a later trainer's sweep removes it
                    _remove(path)


def _enable(hierarchy: Hierarchy) -> None:
    """Make sure sessions can have cgroups with our controllers here: raises OSError where not."""
    if hierarchy.version == 2:
        # fails (EBUSY) when our cgroup holds processes and is not the root: then no v2 caps for us
        _write(hierarchy.own / "cgroup.subtree_control", " ".join(f"+{c}" for c in hierarchy.controllers))
    probe = hierarchy.own / f"{PREFIX}{os.getpid()}-probe"
    probe.mkdir(exist_ok=True)
    probe.rmdir()


def _remove(cgroup: Path) -> None:
    """SIGKILL the processes of `cgroup`, then remove it; raises OSError while they are still dying."""
    for pid in _read(cgroup / "cgroup.procs").split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        cgroup.rmdir()


def _remove_abandoned(own: Path) -> None:
    """Cgroups left by trainers that died: their pid is gone (older versions made one parent per trainer)."""
    with contextlib.suppress(OSError):
        for path in own.glob(PREFIX + "*"):
            trainer = path.name.removeprefix(PREFIX).split("-")[0]
            if trainer.isdigit() and not Path(f"/proc/{trainer}").exists():
                for cgroup in [*(p for p in path.iterdir() if p.is_dir()), path]:
                    with contextlib.suppress(OSError):
                        _remove(cgroup)


@dataclass(frozen=True)
class JoinedSession:
    """The cgroups a session's supervisor joined."""

    memory: tuple[int, str] | None  # (version, path) of the one that caps its memory
    cpu: bool  # its CPU quota is set

    def out_of_memory(self) -> bool:
        """Whether the kernel has killed a process of the session for exceeding the memory cap."""
        return self.memory is not None and oom_kills(self.memory[1], self.memory[0]) > 0


def join_session(parents: list[dict[str, Any]] | None, memory_mb: int, cpus: float, pid: int) -> JoinedSession | None:
    """Make the session's cgroup in each of `parents` (SessionCgroups.settings), named after `pid`, capped at
    `memory_mb` (swap included) and `cpus`, and move this process into each."""
    if not parents:
        return None
    memory, cpu = None, False
    for parent in parents:
        path = Path(parent["parent"]) / f"{parent['prefix']}{pid}"
        path.mkdir()
        if "memory" in parent["controllers"]:
            _cap_memory(path, parent["version"], memory_mb)
            memory = (parent["version"], str(path))
        if "cpu" in parent["controllers"]:
            cpu = _cap_cpu(path, parent["version"], cpus)
        _write(path / "cgroup.procs", "0")  # 0: the writing process, whatever its PID namespace calls it
    return JoinedSession(memory, cpu)


def _cap_memory(path: Path, version: int, memory_mb: int) -> None:
    limit = str(memory_mb * MB)
    if version == 2:
        _write(path / "memory.max", limit)
        with contextlib.suppress(OSError):
            _write(path / "memory.swap.max", "0")
    else:
        _write(path / "memory.limit_in_bytes", limit)
        with contextlib.suppress(OSError):  # only with swap accounting; must not be below the limit above
            _write(path / "memory.memsw.limit_in_bytes", limit)


def _cap_cpu(path: Path, version: int, cpus: float) -> bool:
    quota = max(MIN_CPU_QUOTA_US, round(cpus * CPU_PERIOD_US))
    try:
        if version == 2:
            _write(path / "cpu.max", f"{quota} {CPU_PERIOD_US}")
        else:  # a new cgroup's period is the kernel's default, CPU_PERIOD_US
            _write(path / "cpu.cfs_quota_us", str(quota))
    except OSError:  # e.g. a parent with a smaller quota: the session runs without one of its own
        return False
    return True


def oom_kills(path: str, version: int) -> int:
    """How many processes of the session the kernel has killed for exceeding the cap."""
    events = _read(Path(path) / ("memory.events" if version == 2 else "memory.oom_control"))
    for line in events.splitlines():
        name, _, count = line.partition(" ")
        if name == "oom_kill":
            return int(count)
    return 0
