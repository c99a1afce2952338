"""Child-side confinement of a sandbox worker: namespaces, a sealed filesystem, rlimits, a throwaway uid.

Runs only inside worker processes (see worker.py) and the template they fork from, never in the trainer.
As root, sessions get namespaces and a throwaway uid. As any other user, the template first moves into a user
namespace of its own (`own_namespaces`), whose capabilities build the same namespaces and sealed filesystem;
the worker then drops every capability before running code, which keeps the trainer's uid. Every step is
best effort: what could not be applied on this machine is recorded in an `Isolation` report that ends up in
run.json. Standard library only, because it runs before anything else is imported in the worker.
"""

from __future__ import annotations

import ctypes
import functools
import os
import resource
import signal
import stat
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_MOVE, MS_REC = 0x20, 0x400, 0x800, 0x1000, 0x2000, 0x4000
MS_PRIVATE, MS_RELATIME = 0x40000, 0x200000
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 1, 24, 36, 38, 47
PR_CAP_AMBIENT_RAISE, PR_CAP_AMBIENT_CLEAR_ALL = 2, 4
CAP_NET_ADMIN, CAP_SYS_PTRACE, CAP_SYS_ADMIN = 12, 19, 21
LINUX_CAPABILITY_VERSION_3 = 0x20080522
# A read-only remount must keep the flags the kernel locks on a mount seen from a user namespace.
KEPT_MOUNT_FLAGS = ((os.ST_NOEXEC, MS_NOEXEC), (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME),
                    (os.ST_RELATIME, MS_RELATIME))  # fmt: skip

# What a sealed session sees of the host, read-only: programs, libraries, /etc (the dynamic linker's cache,
# certificates, time zones), and the interpreter's own folders. Nothing else: no homes, data, runs, projects.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
DEVICES = ("null", "zero", "full", "random", "urandom")
# Empty and private in a sealed session; inside its one size-capped tmpfs.
SHARED_WRITABLE_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
# Where the code sees its workdir when a mount namespace allows it: the same path in every session, so that
# outputs which show it (os.getcwd(), tracebacks) keep requests identical and the response cache valid.
STABLE_WORKDIR = Path("/tmp/work")

_libc = ctypes.CDLL(None, use_errno=True)
# Set in the template (or a spawned session) by own_namespaces; forks inherit them.
_in_own_user_namespace = False
_why_no_user_namespace = "no user namespace was tried"


@dataclass
class Isolation:
    """What confinement is actually in force for a worker on this machine."""

    uid: int | None = None  # the unprivileged uid the code runs as; None = the trainer's own user
    user_namespace: bool = False  # not root: namespaces from a user namespace of our own; code has no capability
    process_limit: bool = False  # RLIMIT_NPROC counts this session's processes only, and is set
    pid_namespace: bool = False  # killing the worker kills every process it started, even detached ones
    network_namespace: bool = False  # no network interfaces at all (network false, or no way out could be made)
    web_only_network: bool = False  # a network of its own that reaches none of the host's addresses (network.py)
    ipc_namespace: bool = False  # System V message queues, semaphores and shared memory of its own, gone with it
    cpu_limit: bool = False  # its processes together get at most `sandbox.cpus` CPUs (a cgroup)
    mount_namespace: bool = False
    sealed: bool = False  # the code sees only system and interpreter folders, its workdir and private temp dirs
    private_dirs: list[str] = field(default_factory=list)  # world-writable dirs that are private and empty
    notes: list[str] = field(default_factory=list)  # what could not be applied, and why


@dataclass(frozen=True)
class Limits:
    cpu_s: int
    memory_mb: int
    max_processes: int
    max_file_mb: int
    disk_mb: int  # everything the session writes (workdir and temp dirs), when sealed


def _call(function_name: str, *args: object) -> None:
    if getattr(_libc, function_name)(*args) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{function_name}: {os.strerror(errno)}")


def _c_string(text: str | None) -> bytes | None:
    return text.encode() if text is not None else None


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _call("mount", _c_string(source), _c_string(target), _c_string(fstype), ctypes.c_ulong(flags), _c_string(data))


def can_confine() -> bool:
    """Whether this process may build namespaces: as root, or inside a user namespace of its own."""
    return os.geteuid() == 0 or _in_own_user_namespace


def own_namespaces() -> None:
    """Where we are not root: enter a user namespace of our own (our uid mapped to itself) and a PID namespace
    it owns, so that sessions can be confined as under root. The PID namespace needs a fork: this process
    stays behind, waits for the child that continues (PID 1 of that namespace) and exits as it does. Where
    the kernel refuses, nothing changes and the sessions' reports say why."""
    global _in_own_user_namespace, _why_no_user_namespace
    if os.geteuid() == 0 or _in_own_user_namespace:
        return
    try:
        _unshare_user_namespace(CLONE_NEWPID)
    except OSError as exc:
        _why_no_user_namespace = f"no user namespace ({exc})"
        return
    _in_own_user_namespace = True
    child = os.fork()
    if child:
        _, status = os.waitpid(child, 0)
        os._exit(os.waitstatus_to_exitcode(status) % 256)
    die_with_parent()


def _unshare_user_namespace(flags: int) -> None:
    """A new user namespace (with the namespaces in `flags`, which it then owns) where our ids map to themselves."""
    uid, gid = os.geteuid(), os.getegid()
    _call("unshare", CLONE_NEWUSER | flags)
    Path("/proc/self/setgroups").write_text("deny")  # required before an unprivileged gid_map
    Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
    Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")


def drop_capabilities() -> None:
    """Give up every capability for good (bounding set, ambient, then the sets themselves): what built the
    sandbox in our user namespace (mounts, chroot) must not reach the code, which could undo the seal."""
    capability = 0
    while _libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) == 0:  # until EINVAL past the last one
        capability += 1
    _call("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    _call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    _call("capset", header, (ctypes.c_uint32 * 6)())  # effective, permitted, inheritable: all empty


def keep_capabilities_across_exec(capabilities: tuple[int, ...]) -> None:
    """Let a program we exec keep `capabilities`: in our user namespace we are not its root, so exec would drop
    them all (they become inheritable and ambient)."""
    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    sets = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable; for capabilities 0-31, then 32-63
    _call("capget", header, sets)
    for capability in capabilities:
        sets[3 * (capability // 32) + 2] |= 1 << (capability % 32)
    _call("capset", header, sets)
    for capability in capabilities:
        _call("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, capability, 0, 0)


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies, so a crashed trainer leaves no workers behind."""
    _call("prctl", PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def adopt_orphans() -> None:
    """Make this process the reaper of its descendants' orphans (matters when there is no PID namespace)."""
    _call("prctl", PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


@contextmanager
def pid_namespace_for_next_fork() -> Iterator[bool]:
    """Make the next child forked inside the block PID 1 of a new PID namespace (as root, where allowed);
    yields whether it will be. The caller's own later children are born in its namespace again."""
    if not can_confine():
        yield False
        return
    try:
        _call("unshare", CLONE_NEWPID)
    except OSError:
        yield False
        return
    try:
        yield True
    finally:
        own = os.open("/proc/self/ns/pid", os.O_RDONLY)
        try:
            _call("setns", own, CLONE_NEWPID)
        finally:
            os.close(own)


def enter_namespaces(network: bool, isolation: Isolation, connect_web: Callable[[], None] | None = None) -> None:
    """Unshare the mount and IPC namespaces and, unless `network` without `connect_web`, the network namespace;
    show the session's own processes at /proc (what a sealed filesystem binds); the caller and its children live in
    them. `connect_web` gives the new network namespace its way out (network.WebNetwork.connect). In our user
    namespace, the session also gets a user namespace of its own, so that RLIMIT_NPROC counts only its processes."""
    if not can_confine():
        isolation.notes.append(
            f"not running as root and {_why_no_user_namespace}: no namespaces, processes run as the trainer's user"
        )
        return
    own_network = not network or connect_web is not None
    try:
        _call("unshare", CLONE_NEWNS | CLONE_NEWIPC | (CLONE_NEWNET if own_network else 0))
        # Without this, mounts made in the new namespace would propagate back to the host.
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        if isolation.pid_namespace:  # mounted before a user namespace of the session's own, which could not
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError as exc:
        isolation.notes.append(f"namespaces unavailable ({exc})")
        return
    if connect_web is not None:  # while we hold the capabilities of the user namespace that owns the network
        try:
            connect_web()
            isolation.web_only_network = True
        except OSError as exc:  # the session keeps a network of its own with no way out: nothing, not the host
            isolation.notes.append(f"no network: {exc}")
    if _in_own_user_namespace:
        try:
            _unshare_user_namespace(CLONE_NEWNS)  # the new mount namespace is the one the worker may change
        except OSError as exc:
            isolation.notes.append(f"namespaces unavailable ({exc})")
            return
        isolation.user_namespace = True
    isolation.mount_namespace = isolation.ipc_namespace = True
    isolation.network_namespace = own_network and not isolation.web_only_network


def _first_unenterable_dir(path: Path) -> Path | None:
    """The top-most directory on the way to `path` that other users may not traverse (e.g. /root, mode 700)."""
    for directory in [*reversed(path.parents), path]:
        if not os.stat(directory).st_mode & stat.S_IXOTH:
            return directory
    return None


@functools.cache  # the same for every session of a template; its Path arithmetic costs milliseconds
def interpreter_paths() -> tuple[Path, ...]:
    """The directories the interpreter needs to import modules: its prefixes and site-packages folders.

    Not every `sys.path` entry: the current folder, PYTHONPATH and editable installs point into project
    checkouts, which sandboxed code must not see (the worker's own modules are imported before sealing).
    """
    prefixes = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix}
    packages = {p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages")}
    candidates = {*prefixes, *packages, os.path.dirname(os.path.realpath(sys.executable))}
    resolved = {Path(p).resolve() for p in candidates if p and os.path.isdir(p)}
    return tuple(sorted(p for p in resolved if not any(other in p.parents for other in resolved)))


@functools.cache
def visible_host_paths() -> tuple[Path, ...]:
    """What a sealed session sees of the host: the system folders and the interpreter's, outermost only."""
    system = [Path(d) for d in SYSTEM_DIRS if os.path.lexists(d)]
    return (*system, *(p for p in interpreter_paths() if not any(s in p.parents for s in system)))


def seal_filesystem(
    workdir: Path, uid: int | None, disk_mb: int, isolation: Isolation, nameserver: str | None = None
) -> Path:
    """In the private mount namespace, make a new root of a `disk_mb` tmpfs holding only: the system's
    program and library folders and the interpreter's, read-only; /dev's harmless devices; a fresh /proc;
    empty /tmp, /var/tmp and /dev/shm; and a copy of the workdir's files at STABLE_WORKDIR. Everything the
    session can write is in that one tmpfs, so `disk_mb` caps it all. With `nameserver`, /etc/resolv.conf names
    it alone. Returns where the code's workdir is.
    """
    if not isolation.mount_namespace:
        return workdir
    attachments = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    root = workdir  # covered by the new root: the host's folders stay reachable for the binds below
    _mount("tmpfs", str(root), "tmpfs", MS_NOSUID | MS_NODEV, f"size={disk_mb}m,mode=755")
    for source in visible_host_paths():
        _bind_read_only(source, root)
    _make_devices(root)
    (root / "proc").mkdir()
    _mount("/proc", str(root / "proc"), None, MS_BIND | MS_REC)  # the session's own (see enter_namespaces)
    for directory in SHARED_WRITABLE_DIRS:
        (root / directory.lstrip("/")).mkdir(parents=True, exist_ok=True)
        os.chmod(root / directory.lstrip("/"), 0o1777)
    _copy_attachments(attachments, root / str(STABLE_WORKDIR).lstrip("/"), uid)
    if nameserver is not None:
        _use_nameserver(root, nameserver, isolation)
    os.chdir(root)
    _mount(".", "/", None, MS_MOVE)  # as switch_root does: the host's tree is now out of reach
    os.chroot(".")
    isolation.sealed = True
    isolation.private_dirs = list(SHARED_WRITABLE_DIRS)
    return STABLE_WORKDIR


def _bind_read_only(source: Path, root: Path) -> None:
    target = root / str(source).lstrip("/")
    if source.is_symlink() and str(source) in SYSTEM_DIRS:  # /bin -> usr/bin on merged-/usr systems
        target.symlink_to(os.readlink(source))
        return
    target.mkdir(parents=True, exist_ok=True)
    _mount(str(source), str(target), None, MS_BIND | MS_REC)
    kept = os.statvfs(source).f_flag
    flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV
    _mount(None, str(target), None, flags | sum(ms for st, ms in KEPT_MOUNT_FLAGS if kept & st))


def _make_devices(root: Path) -> None:
    dev = root / "dev"
    (dev / "shm").mkdir(parents=True)
    for name in DEVICES:
        (dev / name).touch()
        _mount(f"/dev/{name}", str(dev / name), None, MS_BIND)
    for name, target in [("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")]:  # fmt: skip
        (dev / name).symlink_to(target)


def _use_nameserver(root: Path, nameserver: str, isolation: Isolation) -> None:
    """Make the new root's /etc/resolv.conf, wherever its symlinks lead, name only `nameserver`."""
    inside = root / os.path.realpath("/etc/resolv.conf").lstrip("/")
    text = f"nameserver {nameserver}\n"
    try:
        if inside.is_file():  # in a read-only bind of the host's folder: cover it with a file of ours
            ours = root / "run" / "resolv.conf"
            ours.parent.mkdir(exist_ok=True)
            ours.write_text(text)
            _mount(str(ours), str(inside), None, MS_BIND)
        else:  # where the host's link leads outside what the root shows (e.g. /run/systemd/resolve/)
            inside.parent.mkdir(parents=True, exist_ok=True)
            inside.write_text(text)
    except OSError as exc:
        isolation.notes.append(f"names cannot be resolved: no resolv.conf for {nameserver} ({exc})")


def _copy_attachments(source: int, workdir: Path, uid: int | None) -> None:
    """Copy the files the trainer put in the session's host folder (open as `source`) into the tmpfs."""
    workdir.mkdir()
    try:
        for name in os.listdir(source):
            with open(name, "rb", opener=lambda path, flags: os.open(path, flags, dir_fd=source)) as file:
                (workdir / name).write_bytes(file.read())
            if uid is not None:
                os.chown(workdir / name, uid, uid)
    finally:
        os.close(source)  # a descriptor of a host folder would let code climb out of the new root
    if uid is not None:
        os.chown(workdir, uid, uid)


def apply_limits(limits: Limits, isolation: Isolation) -> None:
    """Kernel resource limits; the soft CPU limit sends SIGXCPU, the hard one a second later SIGKILL.

    RLIMIT_NPROC counts every process and thread of the real uid (in the user namespace, since Linux 5.14), so
    it is only meaningful (and only set) when the worker runs as a uid of its own, or in a user namespace of
    the session's own (where the session's init counts too): root ignores it, and a shared uid would count
    unrelated processes.
    """
    mb = 1024 * 1024
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb * mb, limits.memory_mb * mb))
    if isolation.uid is not None or (isolation.user_namespace and _rlimits_count_per_user_namespace()):
        processes = limits.max_processes + (1 if isolation.user_namespace else 0)  # the session's init
        resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
        isolation.process_limit = True
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.max_file_mb * mb, limits.max_file_mb * mb))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # A too-large write then fails with OSError (EFBIG) instead of killing the worker.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _rlimits_count_per_user_namespace() -> bool:
    """Linux 5.14 and later count RLIMIT_NPROC per user namespace; earlier ones over all of the uid's processes."""
    release = os.uname().release.split("-")[0].split(".")
    try:
        return (int(release[0]), int(release[1])) >= (5, 14)
    except (IndexError, ValueError):
        return False


def drop_privileges(uid: int | None, isolation: Isolation) -> None:
    """Switch to `uid` (as root only), so that the rest of the filesystem becomes read-only to the code. In a user
    namespace of our own, drop its capabilities instead (the code keeps the trainer's uid)."""
    if _in_own_user_namespace:  # whether or not the session's namespaces could be made
        drop_capabilities()
        return
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
