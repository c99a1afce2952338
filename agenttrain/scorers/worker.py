"""The scorer processes. `serve_template` is the template that runner.JudgePool forks workers from;
`python -m agenttrain.scorers.worker FD` is a worker in a fresh interpreter, where no template can start.
A worker judges jobs received on its socket until the caller closes it.

A worker caps its own address space so that a runaway expression fails with MemoryError (one wrong item)
instead of exhausting the machine.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import sys
from multiprocessing.connection import Connection
from typing import Any, NoReturn

from agenttrain.forking import serve_requests, template_settings
from agenttrain.registry import scorers
from agenttrain.scorers.judging import judge
from agenttrain.scorers.runner import READY, Job
from agenttrain.scorers.verdict import Verdict

MEMORY_LIMIT_BYTES = 2 * 1024**3


def _cap_memory() -> None:
    try:
        import resource
    except ImportError:  # not POSIX: no cap
        return
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))


def _judge(job: Job) -> Verdict:
    scorer, prediction, answer, fields = job
    try:
        return judge(scorer, prediction, answer, fields)
    except Exception as exc:  # a scorer bug must cost one item, not the run
        return Verdict(correct=False, extracted=None, note=f"scorer error: {type(exc).__name__}: {exc}")


def serve(connection: Connection) -> None:
    """Judge each job received until the caller closes the connection."""
    _cap_memory()
    scorers.names()  # import every scorer now, so no item's time limit pays for it
    connection.send((READY, os.getpid()))
    while True:
        try:
            job = connection.recv()
        except EOFError:
            return
        connection.send(_judge(job))


def serve_template() -> None:
    """The template's program: import the built-in scorers and the one the pool was first asked for (not every
    plugin: one may import much more than its scorer), judge one made-up item with it (math-verify builds its
    parsers on first use), then fork a worker per request."""
    control, settings = template_settings()
    _judge((settings["warm"], "\\boxed{2}", "1", {}))  # a scorer error here is a note on a made-up item
    gc.freeze()  # the imported objects are never collected: forks share their pages instead of copying them

    def fork_worker(connection: socket.socket, _: dict[str, Any]) -> None:
        if os.fork() == 0:
            _run_worker(control, connection)

    serve_requests(control, fork_worker)


def _run_worker(control: socket.socket, connection: socket.socket) -> NoReturn:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the template ignores it
    control.close()
    try:
        serve(Connection(connection.detach()))
    finally:
        os._exit(0)


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))
