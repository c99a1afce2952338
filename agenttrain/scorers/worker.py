"""The scorer process: `python -m agenttrain.scorers.worker FD` judges jobs received on socket FD.

It caps its own address space so that a runaway expression fails with MemoryError (one wrong item)
instead of exhausting the machine.
"""

from __future__ import annotations

import sys
from multiprocessing.connection import Connection

from agenttrain.registry import scorers
from agenttrain.scorers.registry import judge
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
    connection.send(READY)
    while True:
        try:
            job = connection.recv()
        except EOFError:
            return
        connection.send(_judge(job))


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))
