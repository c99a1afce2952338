"""Values computed from one file, kept while the file's size and modification time stay the same.

A run's snapshots and evaluation results are written once (atomically) and only replaced whole, so a changed
size or time is how the viewer notices a new version without reading the file again on every request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")


class FileCache(Generic[T]):
    def __init__(self) -> None:
        self._entries: dict[Path, tuple[tuple[Hashable, ...], T]] = {}
        self._lock = threading.Lock()

    def get(self, path: Path, compute: Callable[[], T], *key: Hashable) -> T:
        """`compute()`'s value for `path` as it is now; `key` adds what else the value depends on.
        A missing file raises FileNotFoundError."""
        stat = path.stat()
        version = (stat.st_size, stat.st_mtime_ns, *key)
        with self._lock:
            cached = self._entries.get(path)
        if cached is not None and cached[0] == version:
            return cached[1]
        value = compute()  # outside the lock: two first requests may both compute, neither waits on the other
        with self._lock:
            self._entries[path] = (version, value)
        return value
