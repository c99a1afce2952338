"""Child-side confinement of a sandbox worker: namespaces, a private filesystem view, rlimits, a throwaway uid.

Runs only inside worker processes (see sandbox_worker.py), never in the trainer. Every step is best effort:
what could not be applied on this machine is recorded in an `Isolation` report that ends up in run.json.
Standard library only, because it runs before anything else is imported in the worker.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 36, 38

# World-writable directories that get an empty private tmpfs, so the only shared place to write is the workdir.
SHARED_WRITABLE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
# Where the code sees its workdir when a mount namespace allows it: the same path in every session, so that
# outputs which show it (os.getcwd(), tracebacks) keep requests identical and the response cache valid.
STABLE_WORKDIR = Path("/tmp/work")

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass
class Isolation:
    """What confinement is actually in force for a worker on this machine."""

    uid: int | None = None  # the unprivileged uid the code runs as; None = the trainer's own user
    pid_namespace: bool = False  # killing the worker kills every process it started, even detached ones
    network_namespace: bool = False  # no network interfaces at all
    mount_namespace: bool = False
    private_dirs: list[str] = field(default_factory=list)  # world-writable dirs replaced by a private tmpfs
    hidden_dirs: list[str] = field(default_factory=list)  # unreadable dirs masked, only interpreter paths kept
    notes: list[str] = field(default_factory=list)  # what could not be applied, and why


@dataclass(frozen=True)
class Limits:
    cpu_s: int
    memory_mb: int
    max_processes: int
    max_file_mb: int


def _call(function_name: str, *args: object) -> None:
    if getattr(_libc, function_name)(*args) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{function_name}: {os.strerror(errno)}")


def _c_string(text: str | None) -> bytes | None:
    return text.encode() if text is not None else None


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _call("mount", _c_string(source), _c_string(target), _c_string(fstype), ctypes.c_ulong(flags), _c_string(data))


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies, so a crashed trainer leaves no workers behind."""
    _call("prctl", PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def adopt_orphans() -> None:
    """Make this process the reaper of its descendants' orphans (matters when there is no PID namespace)."""
    _call("prctl", PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def enter_namespaces(network: bool, isolation: Isolation) -> None:
    """Unshare PID, mount and (unless `network`) network namespaces; children of the caller live in them."""
    if os.geteuid() != 0:
        isolation.notes.append("not running as root: no namespaces, processes run as the trainer's user")
        return
    flags = CLONE_NEWNS | CLONE_NEWPID | (0 if network else CLONE_NEWNET)
    try:
        _call("unshare", flags)
        # Without this, mounts made in the new namespace would propagate back to the host.
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
    except OSError as exc:
        isolation.notes.append(f"namespaces unavailable ({exc})")
        return
    isolation.pid_namespace = isolation.mount_namespace = True
    isolation.network_namespace = not network


def _first_unenterable_dir(path: Path) -> Path | None:
    """The top-most directory on the way to `path` that other users may not traverse (e.g. /root, mode 700)."""
    for directory in [*reversed(path.parents), path]:
        if not os.stat(directory).st_mode & stat.S_IXOTH:
            return directory
    return None


def interpreter_paths() -> set[Path]:
    """Directories the Python interpreter needs to keep importing modules and start subprocesses."""
    prefixes = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix}
    candidates = {*prefixes, *sys.path, os.path.dirname(os.path.realpath(sys.executable))}
    return {Path(p).resolve() for p in candidates if p and os.path.isdir(p)}


def _outermost(paths: set[Path]) -> list[Path]:
    return sorted(p for p in paths if not any(other in p.parents for other in paths))


def build_filesystem_view(workdir: Path, tmp_size_mb: int, isolation: Isolation) -> Path:
    """In the private mount namespace: a fresh /proc, empty private temp dirs, unreadable dirs masked.

    The interpreter's own directories are bound back at their usual paths and the workdir (absolute, no
    symlinks) at STABLE_WORKDIR; they are opened before anything is covered and bound from /proc/self/fd, since
    covering hides them. Returns where the code's workdir is.
    """
    if not isolation.mount_namespace:
        return workdir
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    interpreter = _outermost(interpreter_paths())
    hidden = {d for d in map(_first_unenterable_dir, [*interpreter, workdir.parent]) if d is not None}
    covered = {Path(d): f"size={tmp_size_mb}m,mode=1777" for d in SHARED_WRITABLE_DIRS if os.path.isdir(d)}
    covered.update({d: "size=1m,mode=755" for d in hidden})
    under_cover = [p for p in interpreter if any(c == p or c in p.parents for c in covered)]
    descriptors = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in [workdir, *under_cover]}
    for directory in sorted(covered):  # parents first: a covered dir may lie inside another one
        directory.mkdir(parents=True, exist_ok=True)
        _mount("tmpfs", str(directory), "tmpfs", MS_NOSUID | MS_NODEV, covered[directory])
    for path, descriptor in descriptors.items():
        target = STABLE_WORKDIR if path == workdir else path
        target.mkdir(parents=True, exist_ok=True)
        _mount(f"/proc/self/fd/{descriptor}", str(target), None, MS_BIND | MS_REC)
        os.close(descriptor)
    isolation.private_dirs = sorted(str(d) for d in covered if d not in hidden)
    isolation.hidden_dirs = sorted(str(d) for d in hidden)
    return STABLE_WORKDIR


def apply_limits(limits: Limits, isolation: Isolation) -> None:
    """Kernel resource limits; the soft CPU limit sends SIGXCPU, the hard one a second later SIGKILL.

    RLIMIT_NPROC counts every process and thread of the real uid, so it is only meaningful (and only set)
    when the worker runs as a uid of its own: root ignores it, and a shared uid would count unrelated
    processes.
    """
    mb = 1024 * 1024
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb * mb, limits.memory_mb * mb))
    if isolation.uid is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.max_file_mb * mb, limits.max_file_mb * mb))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # A too-large write then fails with OSError (EFBIG) instead of killing the worker.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def drop_privileges(uid: int | None, isolation: Isolation) -> None:
    """Switch to `uid` (as root only), so that the rest of the filesystem becomes read-only to the code."""
    if uid is None or os.geteuid() != 0:
        return
    if not isolation.mount_namespace and _interpreter_unreadable():
        isolation.notes.append("kept root: the interpreter is unreadable to other users and cannot be re-mounted")
        return
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    _call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # setuid binaries (sudo, su) cannot regain root
    isolation.uid = uid


def _interpreter_unreadable() -> bool:
    return any(_first_unenterable_dir(p) is not None for p in interpreter_paths())
