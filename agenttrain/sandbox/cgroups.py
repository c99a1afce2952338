"""Memory caps for a session's whole process tree, with a cgroup per session.

The trainer makes one parent cgroup per Sandbox (`SessionCgroups.create`); each session's init makes its
own child under it and joins it before it starts anything (`join_session`), so every process of the session,
including those that leave its process tree, is counted against one `memory.max`. cgroup v2 is used where
its memory controller can be enabled for us; else cgroup v1's memory controller (hybrid machines); else
nothing, and the sandbox falls back to per-process limits. Standard library only: the session side runs
in the session's init process.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

MB = 1024 * 1024
PARENT_PREFIX = "agenttrain-"


@dataclass(frozen=True)
class CgroupMount:
    version: int  # 1 or 2
    own: Path  # this process's cgroup in that hierarchy


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


def find_memory_cgroup() -> CgroupMount | None:
    """Where this process can make child cgroups with a memory controller, if anywhere."""
    try:
        mounts, own = _mounts(), _own_paths()
    except OSError:
        return None
    for point, fstype, _options in mounts:
        if fstype == "cgroup2" and "" in own:
            path = Path(point + own[""])
            if "memory" in _read(path / "cgroup.controllers").split():
                return CgroupMount(2, path)
    for point, fstype, options in mounts:
        if fstype == "cgroup" and "memory" in options and "memory" in own:
            return CgroupMount(1, Path(point + own["memory"]))
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _write(path: Path, value: str) -> None:
    path.write_text(value)


class SessionCgroups:
    """The trainer's parent cgroup for its sessions; None from `create` where none can be made."""

    def __init__(self, mount: CgroupMount, path: Path) -> None:
        self.version = mount.version
        self.path = path
        self._busy: set[str] = set()  # ended sessions whose cgroup still had processes being killed

    @classmethod
    def create(cls) -> tuple[SessionCgroups | None, str]:
        """The parent cgroup, or None and why not."""
        mount = find_memory_cgroup()
        if mount is None:
            return None, "no cgroup with a memory controller is available to us"
        _remove_abandoned(mount.own)
        path = mount.own / f"{PARENT_PREFIX}{os.getpid()}"
        try:
            if mount.version == 2:
                # fails (EBUSY) when our cgroup holds processes and is not the root: then no v2 caps for us
                _write(mount.own / "cgroup.subtree_control", "+memory")
            path.mkdir(exist_ok=True)
            if mount.version == 2:
                _write(path / "cgroup.subtree_control", "+memory")
        except OSError as exc:
            with contextlib.suppress(OSError):
                path.rmdir()
            return None, f"cannot make a cgroup v{mount.version} with a memory controller under {mount.own}: {exc}"
        return cls(mount, path), f"cgroup v{mount.version} at {path}"

    def remove(self, name: str) -> None:
        """Remove the cgroup of an ended session (or, if its processes are still dying, at a later call)."""
        self._busy.add(name)
        for session in list(self._busy):
            with contextlib.suppress(FileNotFoundError):
                try:
                    (self.path / session).rmdir()
                except OSError:
                    continue
            self._busy.discard(session)

    def close(self) -> None:
        _remove_children(self.path)
        with contextlib.suppress(OSError):
            self.path.rmdir()


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


def session_name(init_pid: int) -> str:
    return f"session-{init_pid}"


def join_session(parent: str, version: int, memory_mb: int, name: str) -> str:
    """Make the session cgroup `name` capped at `memory_mb` (swap included) and move this process into it."""
    path = Path(parent) / name
    path.mkdir()
    limit = str(memory_mb * MB)
    if version == 2:
        _write(path / "memory.max", limit)
        with contextlib.suppress(OSError):
            _write(path / "memory.swap.max", "0")
    else:
        _write(path / "memory.limit_in_bytes", limit)
        with contextlib.suppress(OSError):  # only with swap accounting; must not be below the limit above
            _write(path / "memory.memsw.limit_in_bytes", limit)
    _write(path / "cgroup.procs", "0")  # 0: the writing process, whatever its PID namespace calls it
    return str(path)


def oom_kills(path: str, version: int) -> int:
    """How many processes of the session the kernel has killed for exceeding the cap."""
    events = _read(Path(path) / ("memory.events" if version == 2 else "memory.oom_control"))
    for line in events.splitlines():
        name, _, count = line.partition(" ")
        if name == "oom_kill":
            return int(count)
    return 0
