"""A real full disk for tests: a small tmpfs mounted inside the test's folder (needs root; skips otherwise)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_disk(path: Path, size_kb: int) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill ({mounted.stderr.strip()}); needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path, leave_kb: int) -> Path:
    """Take all of `disk` but about `leave_kb` KiB with one file; delete it to free the space again."""
    filler = disk / "filler"
    stats = os.statvfs(disk)
    free_kb = stats.f_bavail * stats.f_frsize // 1024
    with open(filler, "ab") as handle:
        handle.write(b"\0" * max(0, free_kb - leave_kb) * 1024)
    return filler
