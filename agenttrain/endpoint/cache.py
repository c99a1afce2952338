"""The on-disk response cache: identical requests replay the stored reply instead of calling the API.

One SQLite file in WAL mode, so a second process (a parallel `agenttrain eval`) can read and write it
while a run is going. Values are small JSON documents; a lookup takes tens of microseconds, so it is
done inline on the event loop.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any, Protocol

import platformdirs

from agenttrain.config import LLMConfig
from agenttrain.errors import UserError
from agenttrain.untrusted import loads, scrub

FILE_NAME = "responses.sqlite3"
SCHEMA_VERSION = 1  # PRAGMA user_version; 0 is the cache before it carried a version


def _create_responses(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


# Step `n` brings a cache of schema n - 1 to schema n. Schema 0 already had the responses table: the step
# only creates it for a new file; later steps alter what older files hold.
MIGRATIONS = {1: _create_responses}

# request fields that route, label or bill a request without changing its reply (OpenAI's and vLLM's / llama.cpp's
# server options); a user may pass them through `extra_body` and still get the cached reply
NOT_IN_KEY = frozenset({
    "user", "metadata", "store", "prompt_cache_key", "prompt_cache_retention", "safety_identifier",
    "service_tier", "cache_prompt", "priority", "request_id",
})

logger = logging.getLogger(__name__)


def request_key(endpoint: str, body: dict[str, Any], sample_index: int) -> str:
    """Hash of everything that decides a reply: the endpoint, the request body (every sampling parameter and
    server option, but not the fields in NOT_IN_KEY) and the sample index."""
    wire = {**body, **body.get("extra_body", {})}  # as the openai client sends it
    wire = {name: value for name, value in wire.items() if name not in NOT_IN_KEY and name != "extra_body"}
    canonical = json.dumps(
        {"endpoint": endpoint, "body": wire, "sample_index": sample_index},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    # surrogatepass: the same bytes as before for all valid text, and a key (not a crash) for a lone surrogate
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


class ReplyStore(Protocol):
    """What the LLM client needs of a cache: the on-disk `ResponseCache`, or one served from another process."""

    async def lookup(self, key: str) -> dict[str, Any] | None: ...
    async def store(self, key: str, value: dict[str, Any]) -> None: ...


class ResponseCache:
    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / FILE_NAME
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # autocommit; the busy timeout lets a second process wait for the write lock instead of failing
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise UserError(
                f"cannot open the response cache {self.path}: {exc} "
                "(set llm.cache_dir to a writable folder, or llm.cache=false)"
            ) from None
        self._lock = threading.Lock()  # one connection, possibly used from worker threads
        self.writable = True
        self.warned_unreadable = False  # a damaged file or entry is said once, then each read of it is a miss
        self.hits = 0
        self.misses = 0

    def _migrate(self) -> None:
        """Apply the steps between the file's schema and this code's, each in its own transaction."""
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise UserError(f"the response cache {self.path} has schema {version}, newer than this agenttrain "
                            f"knows ({SCHEMA_VERSION}); upgrade agenttrain or set llm.cache_dir to another folder")
        for step in range(version + 1, SCHEMA_VERSION + 1):
            self._db.execute("BEGIN IMMEDIATE")  # another process opening the file waits, then skips the step
            (current,) = self._db.execute("PRAGMA user_version").fetchone()
            if current < step:
                MIGRATIONS[step](self._db)
                self._db.execute(f"PRAGMA user_version = {step}")
            self._db.execute("COMMIT")

    @staticmethod
    def default_dir() -> Path:
        return Path(platformdirs.user_cache_dir("agenttrain"))

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored value, or None: also for a damaged file or entry (truncated, not JSON), which is a miss and the
        request is sent again."""
        with self._lock:
            try:
                row = self._db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
                value = None if row is None else loads(row[0])
            except (sqlite3.Error, ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
                self._unreadable(exc)
                row = value = None
            if not isinstance(value, dict):
                self.misses += 1
                return None
            self.hits += 1
        return value

    def _unreadable(self, exc: Exception) -> None:
        if not self.warned_unreadable:
            self.warned_unreadable = True
            logger.warning("cannot read part of the response cache %s (%s): those requests are sent again",
                           self.path, exc)

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Store a reply. A cache that cannot be written (full disk) is a warning once, never a failed run."""
        data = scrub(json.dumps(value, ensure_ascii=False))  # SQLite takes only valid UTF-8 text
        with self._lock:
            if not self.writable:
                return
            try:
                self._db.execute("INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)", (key, data))
            except sqlite3.Error as exc:
                self.writable = False
                logger.warning("cannot write the response cache %s (%s): going on without storing replies; free "
                               "space there or set llm.cache_dir", self.path, exc)

    # the client awaits these, so that a cache served from another process (the Ray executor's) fits the same slot
    async def lookup(self, key: str) -> dict[str, Any] | None:
        return self.get(key)

    async def store(self, key: str, value: dict[str, Any]) -> None:
        self.put(key, value)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            (entries,) = self._db.execute("SELECT COUNT(*) FROM responses").fetchone()
        files = [self.path, self.path.with_name(FILE_NAME + "-wal")]
        size = sum(f.stat().st_size for f in files if f.exists())
        return {"path": str(self.path), "entries": entries, "bytes": size, "hits": self.hits, "misses": self.misses}

    def clear(self) -> int:
        """Delete every entry and give the space back; returns how many entries there were."""
        with self._lock:
            deleted = self._db.execute("DELETE FROM responses").rowcount
            self._db.execute("VACUUM")
        return deleted

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_cache(settings: LLMConfig, enabled: bool = True) -> ResponseCache | None:
    """The cache a run uses, or None when `enabled` (e.g. `--no-cache`) or `llm.cache` turns it off."""
    if not (enabled and settings.cache):
        return None
    try:
        return ResponseCache(settings.cache_dir or ResponseCache.default_dir())
    except UserError as exc:  # training goes on, only without replaying or storing replies
        logger.warning("%s; going on without the cache", exc)
        return None


def cache_stats(directory: Path | None = None) -> dict[str, Any]:
    """For `agenttrain cache stats`: path, entries and bytes of the cache in `directory` (default folder if None)."""
    cache = ResponseCache(directory or ResponseCache.default_dir())
    try:
        return cache.stats()
    finally:
        cache.close()


def cache_clear(directory: Path | None = None) -> int:
    """For `agenttrain cache clear`: empties the cache and returns how many entries were deleted."""
    cache = ResponseCache(directory or ResponseCache.default_dir())
    try:
        return cache.clear()
    finally:
        cache.close()
