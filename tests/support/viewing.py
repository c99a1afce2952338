"""The web viewer served from a thread of the test process, for tests that request its pages."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agenttrain.viewer import start


@contextmanager
def viewer(path: Path, host: str = "127.0.0.1") -> Iterator[str]:
    """The viewer over `path` on a free port of `host`; yields its base URL."""
    server = start(path, host, 0)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()
