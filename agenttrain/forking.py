"""Template processes that fork on request: pay an interpreter's imports once, then a few milliseconds per child.

The sandbox (sandbox/forkserver.py) and the scorers (scorers/worker.py) each run one template program. The
trainer's side is `ForkServer`: it starts the template with a control socket and waits until it says ready;
each request carries a JSON message and, as SCM_RIGHTS, the child's end of a socket pair. The template's side
is `serve_requests`. The template never replies on the control socket: each child speaks on its own socket.
This module imports only the standard library, so that templates and their children start light.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

# Where our own package is, so that the child imports this very copy of agenttrain (a checkout, not an install).
SOURCE_ROOT = str(Path(__file__).resolve().parents[1])
READY = b"ready"
MAX_REQUEST_BYTES = 1 << 16


def python_entry(statement: str) -> str:
    """`python -c` code that runs `statement` with our own agenttrain importable."""
    return f"import sys; sys.path.insert(0, {SOURCE_ROOT!r}); {statement}"


class ForkServerError(Exception):
    """The template could not be started or stopped answering."""


class ForkServer:
    """The trainer's handle on a template process."""

    def __init__(self, process: subprocess.Popen[bytes] | None, control: socket.socket) -> None:
        self._process = process  # None: a template our parent process started (`inherited`)
        self._control = control

    @classmethod
    def inherited(cls, control_fd: int) -> ForkServer:
        """The template whose control socket our parent process handed down as `control_fd` (its `control_fd`):
        children are asked for as from our own; `close` lets go of this handle only, the parent stops the template."""
        return cls(None, socket.socket(fileno=os.dup(control_fd)))

    @property
    def control_fd(self) -> int:
        """The control socket, for a child process to inherit (`inherited`): its templates come from this one."""
        return self._control.fileno()

    @classmethod
    def start(
        cls, python: str, env: Mapping[str, str], statement: str, settings: Mapping[str, Any], timeout_s: float,
        cwd: str = "/",
    ) -> ForkServer:
        """Run `statement` (a template program that calls `template_settings` and `serve_requests`) in `cwd` and
        wait up to `timeout_s` until it is ready. Blocking: call it off the event loop."""
        server = cls.launch(python, env, statement, settings, cwd)
        server.wait_ready(timeout_s)
        return server

    @classmethod
    def launch(
        cls, python: str, env: Mapping[str, str], statement: str, settings: Mapping[str, Any], cwd: str = "/"
    ) -> ForkServer:
        """`start` without the wait: the template's imports run while the caller goes on; `wait_ready` before the
        first `fork`."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        arguments = json.dumps({**settings, "control_fd": theirs.fileno()})
        try:
            process = subprocess.Popen(
                [python, "-c", python_entry(statement), arguments], env=dict(env), cwd=cwd, pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            ours.close()
            raise ForkServerError(f"the template process did not start: {exc}") from None
        finally:
            theirs.close()
        return cls(process, ours)

    def wait_ready(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` until the template says it is ready; closes it if it does not. Blocking."""
        self._control.settimeout(timeout_s)
        try:
            if self._control.recv(len(READY)) != READY:
                raise ForkServerError(f"the template process ended ({self._exit_text()})")
        except BaseException as exc:
            self.close()
            if isinstance(exc, OSError):
                raise ForkServerError(f"the template process did not start: {exc}") from None
            raise

    @property
    def alive(self) -> bool:
        """Whether the template runs (an inherited one is taken to: a request to a dead one fails)."""
        return self._process is None or self._process.poll() is None

    def fork(self, message: Mapping[str, Any], channel: socket.socket) -> None:
        """Ask for a child that talks over `channel` (the child's end; ours may close it after)."""
        try:
            socket.send_fds(self._control, [json.dumps(message).encode()], [channel.fileno()])
        except OSError as exc:
            raise ForkServerError(f"the template process stopped answering: {exc}") from None

    def close(self) -> None:
        if self._process is None:  # inherited: let go of our handle, the parent stops the template
            self._control.close()
            return
        # Killed before its control socket closes: a template still starting would otherwise find the socket
        # closed when it says ready, and print that error on the user's terminal.
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait()
        self._control.close()

    def _exit_text(self) -> str:
        assert self._process is not None  # only our own template is waited for
        with contextlib.suppress(subprocess.TimeoutExpired):
            return f"exit status {self._process.wait(1)}"
        return "still running"


def template_settings() -> tuple[socket.socket, dict[str, Any]]:
    """In the template: its control socket, and the settings `ForkServer.start` passed."""
    settings = json.loads(sys.argv[1])
    return socket.socket(fileno=settings["control_fd"]), settings


def serve_requests(control: socket.socket, fork_child: Callable[[socket.socket, dict[str, Any]], object]) -> NoReturn:
    """In the template, once it has imported what its children share: say ready, then call `fork_child` with each
    request's socket and message until the trainer closes its end. Children are reaped by the kernel."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    control.sendall(READY)
    while True:
        message, descriptors, _, _ = socket.recv_fds(control, MAX_REQUEST_BYTES, 1)
        if not message:
            os._exit(0)
        (channel,) = descriptors
        with socket.socket(fileno=channel) as connection:
            fork_child(connection, json.loads(message))
