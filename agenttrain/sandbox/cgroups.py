"""Memory and CPU caps for a session's whole process tree, with a cgroup per session.

The trainer makes one parent cgroup per Sandbox in each hierarchy it may write (`SessionCgroups.create`); each
session's supervisor makes its own child under each and joins them before it starts anything (`join_session`),
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
PARENT_PREFIX = "agenttrain-"
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
    """The trainer's parent cgroups for its sessions; None from `create` where none can be made."""

    def __init__(self, parents: list[tuple[Hierarchy, Path]]) -> None:
        self._parents = parents
        self._busy: set[str] = set()  # ended sessions whose cgroup still had processes being killed

    @classmethod
    def create(cls) -> tuple[SessionCgroups | None, dict[str, str]]:
        """The parent cgroups, or None; and per controller, where it is or why it is not available."""
        how = {c: f"no cgroup with a {c} controller is available to us" for c in CONTROLLERS}
        parents = []
        for hierarchy in find_hierarchies():
            _remove_abandoned(hierarchy.own)
            path = hierarchy.own / f"{PARENT_PREFIX}{os.getpid()}"
            try:
                _make_parent(hierarchy, path)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    path.rmdir()
                where = f"cgroup v{hierarchy.version} under {hierarchy.own}"
                how.update({c: f"cannot make a {where} with a {c} controller: {exc}" for c in hierarchy.controllers})
                continue
            parents.append((hierarchy, path))
            how.update({c: f"cgroup v{hierarchy.version} at {path}" for c in hierarchy.controllers})
        return (cls(parents) if parents else None), how

    def has(self, controller: str) -> bool:
        return any(controller in hierarchy.controllers for hierarchy, _ in self._parents)

    def settings(self) -> list[dict[str, Any]]:
        """What a session's supervisor needs to join (see join_session)."""
        return [{"parent": str(path), "version": h.version, "controllers": list(h.controllers)}
                for h, path in self._parents]  # fmt: skip

    def remove(self, name: str) -> None:
        """Kill what is left of an ended session, even processes that left its process tree, and remove its
        cgroups (or, if its processes are still dying, at a later call)."""
        self._busy.add(name)
        for session in list(self._busy):
            try:
                for _, path in self._parents:
                    _kill_members(path / session)
                    with contextlib.suppress(FileNotFoundError):
                        (path / session).rmdir()
            except OSError:
                continue
            self._busy.discard(session)

    def close(self) -> None:
        for _, path in self._parents:
            _remove_children(path)
            with contextlib.suppress(OSError):
                path.rmdir()


def _make_parent(hierarchy: Hierarchy, path: Path) -> None:
    enable = " ".join(f"+{c}" for c in hierarchy.controllers)
    if hierarchy.version == 2:
        # fails (EBUSY) when our cgroup holds processes and is not the root: then no v2 caps for us
        _write(hierarchy.own / "cgroup.subtree_control", enable)
    path.mkdir(exist_ok=True)
    if hierarchy.version == 2:
        _write(path / "cgroup.subtree_control", enable)


def _kill_members(cgroup: Path) -> None:
    for pid in _read(cgroup / "cgroup.procs").split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


def _remove_children(path: Path) -> None:
    with contextlib.suppress(OSError):
        for child in path.iterdir():
            if child.is_dir():
                with contextlib.suppress(OSError):  # still has processes: a later sweep removes it
                    child.rmdir()


def _remove_abandoned(parent: Path) -> None:
    """Parents left by trainers that died: their pid is gone."""
    with contextlib.suppress(OSError):
        for path in parent.glob(PARENT_PREFIX + "*"):
            pid = path.name.removeprefix(PARENT_PREFIX)
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                _remove_children(path)
                with contextlib.suppress(OSError):
                    path.rmdir()


def session_name(supervisor_pid: int) -> str:
    return f"session-{supervisor_pid}"


@dataclass(frozen=True)
class JoinedSession:
    """The cgroups a session's supervisor joined."""

    memory: tuple[int, str] | None  # (version, path) of the one that caps its memory
    cpu: bool  # its CPU quota is set

    def out_of_memory(self) -> bool:
        """Whether the kernel has killed a process of the session for exceeding the memory cap."""
        return self.memory is not None and oom_kills(self.memory[1], self.memory[0]) > 0


def join_session(parents: list[dict[str, Any]] | None, memory_mb: int, cpus: float, pid: int) -> JoinedSession | None:
    """Make the session's cgroup under each of `parents` (SessionCgroups.settings), capped at `memory_mb` (swap
    included) and `cpus`, and move this process into each."""
    if not parents:
        return None
    memory, cpu = None, False
    for parent in parents:
        path = Path(parent["parent"]) / session_name(pid)
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
        else:
            _write(path / "cpu.cfs_period_us", str(CPU_PERIOD_US))
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
