"""CPU time of every process a benchmark starts, from a cgroup's own accounting.

`resource.getrusage(RUSAGE_CHILDREN)` counts only children that were waited for, so it misses the sandbox's
forked sessions (children of its template) and anything that left the process tree. A cgroup counts every
process that ever ran in it. Kept free of agenttrain imports, so the same bench can measure older versions.
"""

from __future__ import annotations

import contextlib
import os
import resource
from pathlib import Path


def _cgroup2_dir() -> Path | None:
    """Our own cgroup in the cgroup v2 hierarchy, if one is mounted (cpu.stat needs no controller there)."""
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    own = next((line[3:] for line in lines if line.startswith("0::")), None)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, fstype = line.split(" - ", 1)[0].split(" "), line.split(" - ", 1)[1].split(" ")[0]
        if fstype == "cgroup2" and own is not None:
            return Path(fields[4] + own)
    return None


class CpuCgroup:
    """A fresh cgroup to run processes in; `cpu_s()` is their total CPU time (user + system)."""

    def __init__(self, name: str) -> None:
        parent = _cgroup2_dir()
        self.path: Path | None = None
        if parent is not None and os.geteuid() == 0:
            with contextlib.suppress(OSError):
                (parent / name).mkdir(exist_ok=True)
                self.path = parent / name
        self._parent = parent

    @property
    def how(self) -> str:
        if self.path is None:
            return "getrusage of this process and its waited-for children (no cgroup v2: forked sessions missed)"
        return f"cgroup v2 cpu.stat of {self.path} (every process started, even those that left the tree)"

    def join(self, pid: int = 0) -> None:
        """Move `pid` (0: the calling process) into the cgroup; its later children start in it too."""
        if self.path is not None:
            (self.path / "cgroup.procs").write_text(str(pid or os.getpid()))

    def processes(self) -> list[int]:
        """The processes in the cgroup now (none known without one)."""
        if self.path is None:
            return []
        return [int(pid) for pid in (self.path / "cgroup.procs").read_text().split()]

    def cpu_s(self) -> float:
        if self.path is None:
            return sum(
                resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
                for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
            )
        stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
        return int(stat["usage_usec"]) / 1e6

    def close(self) -> None:
        """Move this process back out and remove the cgroup (once its other processes are gone)."""
        if self.path is None or self._parent is None:
            return
        with contextlib.suppress(OSError):
            if str(os.getpid()) in (self.path / "cgroup.procs").read_text().split():
                (self._parent / "cgroup.procs").write_text(str(os.getpid()))
            self.path.rmdir()
