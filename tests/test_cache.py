import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agenttrain.config import LLMConfig
from agenttrain.endpoint.cache import (
    FILE_NAME,
    SCHEMA_VERSION,
    ResponseCache,
    cache_clear,
    cache_stats,
    open_cache,
    request_key,
)
from agenttrain.errors import UserError
from tests.support.disk import fill, small_disk

FIXTURES = Path(__file__).parent / "fixtures"
ENDPOINT = "http://127.0.0.1:8000/v1/chat/completions"
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.0}


def test_key_ignores_dict_order_but_not_content():
    reordered = {"temperature": 0.0, "messages": [{"content": "hi", "role": "user"}], "model": "m"}
    assert request_key(ENDPOINT, BODY, 0) == request_key(ENDPOINT, reordered, 0)
    assert request_key(ENDPOINT, BODY, 0) != request_key(ENDPOINT, BODY, 1)
    assert request_key(ENDPOINT, BODY, 0) != request_key("http://other/v1/chat/completions", BODY, 0)
    assert request_key(ENDPOINT, BODY, 0) != request_key(ENDPOINT, {**BODY, "temperature": 0.5}, 0)


def test_put_then_get_round_trips_and_counts_hits(tmp_path):
    cache = ResponseCache(tmp_path)
    value = {"message": {"role": "assistant", "content": "é ✓"}, "prompt_tokens": 3}
    assert cache.get("k") is None
    cache.put("k", value)
    assert cache.get("k") == value
    stats = cache.stats()
    assert (stats["entries"], stats["hits"], stats["misses"]) == (1, 1, 1)
    assert stats["bytes"] > 0 and stats["path"].startswith(str(tmp_path))
    cache.close()


def test_entries_survive_reopening(tmp_path):
    first = ResponseCache(tmp_path)
    first.put("k", {"answer": 42})
    first.close()
    assert ResponseCache(tmp_path).get("k") == {"answer": 42}


def test_clear_empties_the_cache_and_reports_the_count(tmp_path):
    cache = ResponseCache(tmp_path)
    for i in range(3):
        cache.put(f"k{i}", {"i": i})
    cache.close()
    assert cache_stats(tmp_path)["entries"] == 3
    assert cache_clear(tmp_path) == 3
    assert cache_stats(tmp_path)["entries"] == 0


def test_two_processes_write_the_same_cache(tmp_path):
    writer = textwrap.dedent(
        f"""
        from pathlib import Path
        from agenttrain.endpoint.cache import ResponseCache
        cache = ResponseCache(Path({str(tmp_path)!r}))
        for i in range(1000):
            cache.put(f"child-{{i}}", {{"i": i}})
        """
    )
    child = subprocess.Popen([sys.executable, "-c", writer])
    cache = ResponseCache(tmp_path)
    deadline = time.monotonic() + 30
    while cache.get("child-0") is None and time.monotonic() < deadline:  # write while the child writes
        time.sleep(0.005)
    for i in range(200):
        cache.put(f"parent-{i}", {"i": i})
    assert child.wait(timeout=60) == 0
    assert cache.stats()["entries"] == 1200
    assert cache.get("child-999") == {"i": 999}


def test_open_cache_follows_the_settings(tmp_path):
    assert open_cache(LLMConfig(cache=False, cache_dir=tmp_path)) is None
    assert open_cache(LLMConfig(cache_dir=tmp_path), enabled=False) is None
    cache = open_cache(LLMConfig(cache_dir=tmp_path / "sub"))
    assert cache is not None and cache.path.parent == tmp_path / "sub"


def test_unusable_directory_is_a_user_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UserError, match=r"llm\.cache_dir"):
        ResponseCache(blocker / "cache")


def test_a_cache_written_before_schema_versions_keeps_its_replies_and_gets_a_version(tmp_path):
    shutil.copy(FIXTURES / "cache-schema-0" / FILE_NAME, tmp_path / FILE_NAME)
    cache = ResponseCache(tmp_path)
    try:
        assert cache.stats()["entries"] == 11
        assert cache._db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    finally:
        cache.close()


def test_a_cache_of_a_newer_schema_is_refused_with_what_to_do(tmp_path):
    db = sqlite3.connect(tmp_path / FILE_NAME)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(UserError, match=rf"has schema {SCHEMA_VERSION + 1}, newer than .*llm.cache_dir"):
        ResponseCache(tmp_path)


def test_a_cache_that_cannot_be_opened_is_a_warning_and_none(tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert open_cache(LLMConfig(cache_dir=blocker / "cache")) is None
    assert "going on without the cache" in caplog.text and "llm.cache_dir" in caplog.text


def test_a_cache_on_a_full_disk_warns_once_and_keeps_serving(tmp_path, caplog):
    with small_disk(tmp_path / "disk", 256) as disk:
        cache = ResponseCache(disk)
        cache.put("k0", {"answer": 0})
        fill(disk, leave_kb=0)
        for i in range(1, 200):  # enough to outgrow the pages the file already has
            cache.put(f"k{i}", {"answer": "x" * 1000})
        assert cache.get("k0") == {"answer": 0}
        cache.close()
    warnings = [r for r in caplog.records if "cannot write the response cache" in r.getMessage()]
    assert len(warnings) == 1 and "full" in warnings[0].getMessage()
