"""Where session working directories live, and how they are removed even when the trainer is killed.

Each Sandbox keeps its sessions' workdirs in one temp root, and holds an flock on a file in it for as long
as it lives. The kernel drops that lock when the process dies however it dies, so a root whose lock can be
taken is abandoned; the next Sandbox to open a root removes such leftovers.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from agenttrain.errors import UserError

ROOT_PREFIX = "agenttrain-sandbox-"
OWNER_LOCK = ".owner.lock"


def remove_abandoned_roots(parent: Path) -> None:
    for root in parent.glob(ROOT_PREFIX + "*"):
        try:
            descriptor = os.open(root / OWNER_LOCK, os.O_RDWR)
        except OSError:
            continue  # being created right now, or not ours
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # its owner is alive
        else:
            shutil.rmtree(root, ignore_errors=True)
        finally:
            os.close(descriptor)


class WorkdirRoot:
    """This Sandbox's temp root; `new_workdir` is safe to call from several threads."""

    def __init__(self) -> None:
        self._path: Path | None = None
        self._lock_fd: int | None = None
        self._opening = threading.Lock()

    def new_workdir(self, files: Sequence[Path], uid: int | None) -> Path:
        """A fresh, private directory holding copies of `files`, owned by `uid` when given."""
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise UserError(f"task file not found: {', '.join(missing)}")
        workdir = Path(tempfile.mkdtemp(prefix="session-", dir=self._open()))
        for file in files:
            shutil.copy2(file, workdir / file.name)
        if uid is not None:
            for path in [workdir, *workdir.iterdir()]:
                os.chown(path, uid, uid)
        return workdir

    def close(self) -> None:
        with self._opening:
            if self._path is not None:
                shutil.rmtree(self._path, ignore_errors=True)
                self._path = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def _open(self) -> Path:
        with self._opening:
            if self._path is None:
                parent = Path(tempfile.gettempdir()).resolve()
                remove_abandoned_roots(parent)
                # Locked before it gets the name a sweeper looks for, so no sweeper can take it for abandoned.
                building = Path(tempfile.mkdtemp(prefix=".building-" + ROOT_PREFIX, dir=parent))
                building.chmod(0o711)  # session uids may pass through to their workdir, not list the others
                self._lock_fd = os.open(building / OWNER_LOCK, os.O_CREAT | os.O_RDWR, 0o600)
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
                self._path = parent / building.name.removeprefix(".building-")
                building.rename(self._path)
            return self._path
