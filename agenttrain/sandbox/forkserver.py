"""The fork server: one template process per Sandbox that has imported sympy, numpy and the worker once, and
forks a session's init (worker.fork_session) on request.

A fork costs a few milliseconds where a fresh interpreter costs ~0.3 s of CPU. The trainer talks to the
template over a control socket: each request carries the new session's settings and, as SCM_RIGHTS, the
worker end of the session's private channel. The template never runs user code and never replies; the new
session says "ready" on its own channel.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agenttrain.sandbox import isolation as confine

# Where our own package is, so that the child imports this very copy of agenttrain (a checkout, not an install).
SOURCE_ROOT = str(Path(__file__).resolve().parents[2])
READY = b"ready"
CONTROL_TIMEOUT_S = 30  # the template imports sympy and numpy before it says ready
MAX_REQUEST_BYTES = 1 << 16


def python_entry(statement: str) -> str:
    """`python -c` code that runs `statement` with our own agenttrain importable."""
    return f"import sys; sys.path.insert(0, {SOURCE_ROOT!r}); {statement}"


class ForkServerError(Exception):
    """The template could not be started or stopped answering."""


class ForkServer:
    """The trainer's handle on a template process."""

    def __init__(self, process: subprocess.Popen[bytes], control: socket.socket) -> None:
        self._process = process
        self._control = control

    @classmethod
    def start(cls, python: str, env: Mapping[str, str], preload: Sequence[str]) -> ForkServer:
        """Start a template and wait until it has imported `preload` (blocking: call it off the event loop)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        settings = json.dumps({"control_fd": theirs.fileno(), "preload": list(preload)})
        entry = python_entry("from agenttrain.sandbox.forkserver import serve; serve()")
        try:
            process = subprocess.Popen(
                [python, "-c", entry, settings], env=dict(env), cwd="/", pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        finally:
            theirs.close()
        server = cls(process, ours)
        ours.settimeout(CONTROL_TIMEOUT_S)
        try:
            if ours.recv(len(READY)) != READY:
                raise ForkServerError(f"the template process ended ({server._exit_text()})")
        except BaseException as exc:
            server.close()
            if isinstance(exc, OSError):
                raise ForkServerError(f"the template process did not start: {exc}") from None
            raise
        return server

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def fork(self, settings: dict[str, Any], channel: socket.socket) -> None:
        """Ask for a session that talks over `channel` (the worker's end; ours may close it after)."""
        try:
            socket.send_fds(self._control, [json.dumps(settings).encode()], [channel.fileno()])
        except OSError as exc:
            raise ForkServerError(f"the template process stopped answering: {exc}") from None

    def close(self) -> None:
        self._control.close()
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait()

    def _exit_text(self) -> str:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return f"exit status {self._process.wait(1)}"
        return "still running"


def serve() -> None:
    """The template's program: import, then fork a session per request until the trainer goes."""
    from agenttrain.sandbox import worker  # imported here so that forks need not import it

    settings = json.loads(sys.argv[1])
    control = socket.socket(fileno=settings["control_fd"])
    confine.die_with_parent()
    for module in settings["preload"]:
        __import__(module)
    confine.visible_host_paths()  # computed once here, not in every session
    gc.freeze()  # the imported objects are never collected: forks share their pages instead of copying them
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the sessions' inits are reaped by the kernel
    control.sendall(READY)
    while True:
        message, descriptors, _, _ = socket.recv_fds(control, MAX_REQUEST_BYTES, 1)
        if not message:
            os._exit(0)  # the trainer closed its end
        (channel,) = descriptors
        with socket.socket(fileno=channel) as connection:
            worker.fork_session(connection, json.loads(message))
