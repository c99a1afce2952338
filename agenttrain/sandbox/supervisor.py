"""The root of a sandbox session's process tree, and the only process of it that speaks to the trainer.

    supervisor  PID 1 of a new PID namespace where one can be made: joins the session's cgroups and namespaces,
    │           relays requests and replies (channel.py), stops the whole session between calls, reaps orphans,
    │           and reports how the worker ended (the process the trainer kills; the kernel then ends all the others)
    ├─ worker   seals its filesystem, drops to the session's uid, runs the model's code (worker.py)
    └─ slirp4netns, with `sandbox.network: true` where installed: the session's own way out (network.py)

It runs no model code, and holds the trainer's channel alone: the worker only reaches it through the relay, which
forwards one bounded reply per request and drops anything else the code writes.

Between calls, while the model thinks, nothing of the session runs: once a reply is relayed every other process
of the session is stopped (SIGSTOP: busy children and threads burn no CPU), and the next request resumes them, so
background processes keep their state across calls. Standard library only.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import selectors
import signal
import socket
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

from agenttrain.sandbox import cgroups, network
from agenttrain.sandbox import isolation as confine
from agenttrain.sandbox.channel import (
    FROM_SUPERVISOR,
    FROM_WORKER,
    MAX_REQUEST_BYTES,
    BadFrame,
    frame,
    message_frame,
    read_frame,
)
from agenttrain.sandbox.worker import Worker


def fork_session(connection: socket.socket, settings: dict[str, Any]) -> int:
    """Fork the session's supervisor, as PID 1 of a new PID namespace where we may make one; returns its pid.

    `settings`: `network`, `slirp4netns` (its path, or None), `memory_mb`, `cpus`, `max_reply_bytes`, and
    `cgroups` (see cgroups.SessionCgroups.settings, or None).
    """
    with confine.pid_namespace_for_next_fork() as pid_namespace:
        supervisor = os.fork()
        if supervisor == 0:
            try:
                run_supervisor(connection, settings, pid_namespace)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the trainer let go of the session before it was ready
            except BaseException:
                traceback.print_exc()  # to the trainer's stderr; the trainer reports the session as ended
            os._exit(1)  # never back into the template's loop
    return supervisor


def run_supervisor(trainer: socket.socket, settings: dict[str, Any], pid_namespace: bool) -> NoReturn:
    """Set the session up, start the worker, relay until the worker or the trainer goes, then end."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the template ignores it, which would make wait() fail
    os.setsid()  # its own process group, which the trainer kills as one where there is no PID namespace
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(null, fd)
    os.close(null)
    # Nothing of the trainer's or the template's may reach user code: only 0-2 and the channel stay open.
    os.closerange(3, trainer.fileno())
    os.closerange(trainer.fileno() + 1, os.sysconf("SC_OPEN_MAX"))
    confine.die_with_parent()
    outer_pid = int(os.readlink("/proc/self"))  # the host's /proc still: our pid as the trainer sees it
    joined = cgroups.join_session(settings["cgroups"], settings["memory_mb"], settings["cpus"], outer_pid)
    isolation = confine.Isolation(pid_namespace=pid_namespace, cpu_limit=bool(joined and joined.cpu))
    if not isolation.cpu_limit:
        os.setpriority(os.PRIO_PROCESS, 0, 19)  # no CPU cap: at least every other process on the machine goes first
    web = network.WebNetwork.prepare(settings["slirp4netns"], outer_pid) if settings["network"] else None
    confine.enter_namespaces(settings["network"], isolation, None if web is None else web.connect)
    if web is not None:
        web.close()
    confine.adopt_orphans()
    ours, theirs = socket.socketpair()
    worker = os.fork()
    if worker == 0:
        trainer.close()
        ours.close()
        confine.die_with_parent()
        Worker(theirs, isolation).serve()
        os._exit(0)
    theirs.close()
    trainer.sendall(message_frame(FROM_SUPERVISOR, 0, {"event": "ready", "pid": outer_pid}))
    status = Relay(trainer, ours, worker, settings["max_reply_bytes"], pid_namespace).run()
    out_of_memory = joined is not None and joined.out_of_memory()
    with contextlib.suppress(OSError):  # nobody may be listening any more
        trainer.sendall(message_frame(FROM_SUPERVISOR, 0, {"event": "exit", **status, "out_of_memory": out_of_memory}))
    os._exit(0)


class Relay:
    """Forwards the trainer's requests to the worker, and for each the first reply the worker sends with its id."""

    def __init__(
        self, trainer: socket.socket, worker: socket.socket, worker_pid: int, max_reply_bytes: int,
        pid_namespace: bool,
    ) -> None:  # fmt: skip
        self._trainer, self._worker, self._worker_pid = trainer, worker, worker_pid
        self._max_reply_bytes = max_reply_bytes
        self._pid_namespace = pid_namespace
        self._pending: collections.deque[int] = collections.deque()  # ids of requests not answered yet, oldest first
        self._stopped = False

    def run(self) -> dict[str, Any]:
        """Relay until the worker ends (returns how: {"status": wait status} or {"broken": why}); exits when the
        trainer closes its end."""
        wakeup, wakeup_writer = socket.socketpair()
        wakeup.setblocking(False)
        wakeup_writer.setblocking(False)
        signal.set_wakeup_fd(wakeup_writer.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # a handler, so that the wakeup fd hears it
        events = selectors.DefaultSelector()
        events.register(self._trainer, selectors.EVENT_READ, self._from_trainer)
        events.register(self._worker, selectors.EVENT_READ, self._from_worker)
        events.register(wakeup, selectors.EVENT_READ, lambda: _drain(wakeup))
        while True:
            for key, _ in events.select():
                try:
                    key.data()
                except BadFrame as exc:  # the code wrote on the worker's channel what our worker never sends
                    return {"broken": str(exc)}
                except EOFError:  # the worker closed its channel: its exit, reaped below, tells how
                    events.unregister(self._worker)
            status = self._reap()
            if status is not None:
                return {"status": status}

    def _from_trainer(self) -> None:
        try:
            received = read_frame(self._trainer, MAX_REQUEST_BYTES)
        except OSError:
            received = None
        if received is None:
            os._exit(0)  # the trainer is done with the session: the kernel ends the rest with us
        _, request_id, body = received
        self._resume()
        self._pending.append(request_id)
        with contextlib.suppress(OSError):  # the worker has ended: its exit, reaped next, answers the request
            self._worker.sendall(frame(FROM_WORKER, request_id, body))

    def _from_worker(self) -> None:
        try:
            received = read_frame(self._worker, self._max_reply_bytes)
        except OSError:
            received = None
        if received is None:
            raise EOFError
        _, request_id, body = received
        if not self._pending or request_id != self._pending[0]:
            return  # not a reply to the request being served: the code wrote it, and it goes nowhere
        self._pending.popleft()
        try:
            self._trainer.sendall(frame(FROM_WORKER, request_id, body))
        except OSError:
            os._exit(0)
        if not self._pending:
            self._stop()

    def _reap(self) -> int | None:
        """Reap every ended child (orphans of the session come to us too); the worker's wait status if it ended."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return None
            if pid == 0:
                return None
            if pid == self._worker_pid:
                return status

    def _stop(self) -> None:
        self._signal_session(signal.SIGSTOP)
        self._stopped = True

    def _resume(self) -> None:
        if self._stopped:
            self._signal_session(signal.SIGCONT)
            self._stopped = False

    def _signal_session(self, signum: int) -> None:
        if self._pid_namespace:  # PID 1 of the session's namespace: -1 is every other process of the session
            with contextlib.suppress(ProcessLookupError):
                os.kill(-1, signum)
            return
        for pid in _descendants(os.getpid()):  # no namespace: our descendants (orphans come to us, a subreaper)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)


def _descendants(root: int) -> list[int]:
    found, queue = [], [root]
    while queue:
        pid = queue.pop()
        for children in Path(f"/proc/{pid}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                pids = [int(child) for child in children.read_text().split()]
                found.extend(pids)
                queue.extend(pids)
    return found


def _drain(wakeup: socket.socket) -> None:
    with contextlib.suppress(BlockingIOError):
        while wakeup.recv(4096):
            pass


def main() -> None:
    """Entry point of a spawned (not forked) session: `settings` as for fork_session, plus `channel_fd` and
    the modules to `preload`. This process stays as the supervisor's parent until the session ends."""
    settings = json.loads(sys.argv[1])
    confine.die_with_parent()
    confine.own_namespaces()
    for module in settings["preload"]:
        __import__(module)
    connection = socket.socket(fileno=settings["channel_fd"])
    os.waitpid(fork_session(connection, settings), 0)


if __name__ == "__main__":
    main()
