"""The program a sandbox session's worker runs: model-written code executes here, never in the trainer.

The worker is the child of the session's supervisor (supervisor.py), which relays its requests and replies over
the worker channel (channel.py). It serves `setup` (confine itself: before any model code runs, so its report of
what is enforced is our own), then `load` (the learned functions' code), then `run` and `call` requests. Its fds
0/1/2 are /dev/null and a capture pipe: whatever user code does to them is its own output or error, never a reply.
"""

from __future__ import annotations

import ast
import builtins
import codecs
import contextlib
import errno
import io
import linecache
import os
import signal
import socket
import sys
import threading
import traceback
import types
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from agenttrain.sandbox import isolation as confine
from agenttrain.sandbox import network
from agenttrain.sandbox.channel import Endpoint

FUNCTIONS_MODULE = "functions"  # code blocks may `from functions import name`
CAPTURE_WAIT_S = 10  # a call's output is complete within this long after the call, unless code broke the pipe
ERROR_CHARS = 2000  # a reason is one line; an exception's message may be long, the traceback in the output has it


TRUNCATED = "\n[... output truncated: "  # how a capped output's note begins, for readers of recorded results


def truncation_note(dropped: int) -> str:
    return f"{TRUNCATED}{dropped} more characters]" if dropped else ""


def truncate(text: str, limit: int) -> str:
    return text[:limit] + truncation_note(max(0, len(text) - limit))


class OutputCapture:
    """fds 1 and 2 of the worker and of every process it starts go into one pipe that a thread drains.

    Per call, the first `limit` characters are kept and the rest only counted, so a flood of output costs
    neither the worker nor the trainer memory. A marker written after each call tells where the call's
    output ends.
    """

    def __init__(self) -> None:
        self._pipe, write_end = os.pipe()
        os.dup2(write_end, 1)
        os.dup2(write_end, 2)
        self._marker_fd = write_end  # independent of fd 1, which user code may close
        self._marker = b"\0agenttrain-end-" + os.urandom(8).hex().encode() + b"\0"
        self._stream = _text_stream()
        self._lock = threading.Lock()
        self._call_done = threading.Event()
        self.begin(limit=0)
        threading.Thread(target=self._drain, name="output-capture", daemon=True).start()

    def begin(self, limit: int) -> None:
        self._reattach()
        with self._lock:
            self._kept: list[str] = []
            self._limit, self._kept_chars, self._dropped = limit, 0, 0
            self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
            self._call_done.clear()

    def end(self) -> str:
        # Code may have closed fd 1 or 2 or our stream: put them back, so what it printed is still its output.
        self._reattach()
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()
        os.write(self._marker_fd, self._marker)
        if not self._call_done.wait(CAPTURE_WAIT_S):
            raise RuntimeError("the code broke the output capture pipe")
        with self._lock:
            return "".join(self._kept) + truncation_note(self._dropped)

    def write(self, text: str) -> None:
        self._reattach()
        self._stream.write(text)

    def _reattach(self) -> None:
        os.dup2(self._marker_fd, 1)
        os.dup2(self._marker_fd, 2)
        if self._stream.closed:
            self._stream = _text_stream()
        sys.stdout = sys.stderr = self._stream  # one stream, so prints and tracebacks keep their order

    def _drain(self) -> None:
        pending = b""
        while chunk := os.read(self._pipe, 1 << 16):
            pending += chunk
            while self._marker in pending:
                before, pending = pending.split(self._marker, 1)
                self._add(before, final=True)
                self._call_done.set()
            # Keep a tail that could be the start of a marker split across reads.
            safe = max(0, len(pending) - len(self._marker))
            self._add(pending[:safe], final=False)
            pending = pending[safe:]

    def _add(self, data: bytes, final: bool) -> None:
        with self._lock:
            text = self._decoder.decode(data, final)
            kept = text[: self._limit - self._kept_chars]
            self._kept.append(kept)
            self._kept_chars += len(kept)
            self._dropped += len(text) - len(kept)


def _text_stream() -> io.TextIOWrapper:
    return io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace")


def describe_exception(exc: BaseException, limits: confine.Limits) -> str:
    if isinstance(exc, MemoryError):
        return f"memory limit exceeded ({limits.memory_mb} MB)"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return f"disk limit exceeded ({limits.disk_mb} MB for the session's files): {exc}"
    if isinstance(exc, SyntaxError):
        return f"{type(exc).__name__}: {exc.msg} (line {exc.lineno})"
    return traceback.format_exception_only(type(exc), exc)[-1].strip()


def format_traceback(exc: BaseException) -> str:
    """The traceback without this file's frames: the model only needs to see its own code."""
    report = traceback.TracebackException.from_exception(exc)
    report.stack = traceback.StackSummary.from_list([f for f in report.stack if f.filename != __file__])
    return "".join(report.format())


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Interrupt Python code running longer than `seconds` (a long C call only when it returns)."""

    def expire(signum: int, frame: types.FrameType | None) -> None:
        raise TimeoutError(f"took longer than {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def compile_with_source(
    code: str | ast.Module | ast.Expression, source: str, filename: str, mode: str = "exec"
) -> types.CodeType:
    """Compile, registering `source` so that tracebacks show the offending lines."""
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    return compile(code, filename, mode, dont_inherit=True)


class Session:
    """The Python state of one rollout: a notebook-like namespace plus the learned functions."""

    def __init__(self, limits: confine.Limits, load_timeout_s: float) -> None:
        self.limits = limits
        self.load_timeout_s = load_timeout_s
        self.main = types.ModuleType("__main__")  # a real module, so pickling cell-defined objects works
        sys.modules["__main__"] = self.main
        self.functions: dict[str, Callable[..., Any]] = {}
        self.cells = 0

    def load_functions(self, functions: list[dict[str, str]]) -> None:
        """Each function's code runs in its own globals, so helpers with equal names do not collide,
        and one that fails to load only breaks itself."""
        namespaces: list[dict[str, Any]] = []
        for function in functions:
            name = function["name"]
            namespace: dict[str, Any] = {"__name__": FUNCTIONS_MODULE, "__builtins__": builtins}
            try:
                with time_limit(self.load_timeout_s):
                    exec(compile_with_source(function["code"], function["code"], f"<function {name}>"), namespace)
                self.functions[name] = namespace[name]
                namespaces.append(namespace)
            except BaseException as exc:
                self.functions[name] = _failed_function(name, describe_exception(exc, self.limits))
        for namespace in namespaces:  # functions may call one another
            for name, loaded in self.functions.items():
                namespace.setdefault(name, loaded)
        module = types.ModuleType(FUNCTIONS_MODULE)
        vars(module).update(self.functions)
        sys.modules[FUNCTIONS_MODULE] = module
        vars(self.main).update(self.functions)

    def run_code(self, code: str) -> None:
        """Run a code block; like a notebook, a final expression's repr is printed."""
        self.cells += 1
        filename = f"<cell {self.cells}>"
        tree = ast.parse(code, filename)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        assert last is None or isinstance(last, ast.Expr)  # for the type checker: checked on the line above
        namespace = vars(self.main)
        exec(compile_with_source(tree, code, filename), namespace)
        if last is not None:
            result = eval(compile_with_source(ast.Expression(last.value), code, filename, "eval"), namespace)
            if result is not None:
                print(repr(result))

    def call_function(self, name: str, arguments: dict[str, Any]) -> str:
        if name not in self.functions:
            raise LookupError(f"no function named {name!r}; defined: {', '.join(self.functions) or 'none'}")
        return str(self.functions[name](**arguments))


def _failed_function(name: str, error: str) -> Callable[..., Any]:
    def failed(*args: Any, **kwargs: Any) -> Any:
        raise ImportError(f"function {name!r} failed to load: {error}")

    failed.__name__ = name
    return failed


class Worker:
    """Serves requests for one session; waits in the warm pool until a `setup` request arrives."""

    def __init__(self, connection: socket.socket, isolation: confine.Isolation) -> None:
        self.channel = Endpoint(connection)
        self.isolation = isolation
        self.capture = OutputCapture()
        self.session: Session | None = None
        self.max_output_chars = 0

    def serve(self) -> None:
        while (request := self.channel.receive()) is not None:
            try:
                reply = self.handle(request)
            except Exception:
                # Our code failed, most likely because the code it ran broke the worker (replaced json,
                # closed our pipes): the session's state cannot be trusted, so the worker ends with it.
                self.channel.send({"event": "failed", "error": truncate(traceback.format_exc(), ERROR_CHARS)})
                os._exit(1)
            self.channel.send(reply)

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        if request["op"] == "setup":
            return self.setup(request)
        session = self.session
        if session is None:
            raise RuntimeError("request before setup")
        if request["op"] == "load":  # functions may call one another; load errors surface on call
            return self.execute(lambda: session.load_functions(request["functions"]))
        if request["op"] == "run":
            return self.execute(lambda: session.run_code(request["code"]))
        if request["op"] == "call":
            return self.execute(lambda: session.call_function(request["name"], request["arguments"]))
        raise ValueError(f"unknown request {request['op']!r}")

    def setup(self, request: dict[str, Any]) -> dict[str, Any]:
        limits = confine.Limits(**request["limits"])
        nameserver = network.NAMESERVER if self.isolation.web_only_network else None
        workdir = confine.seal_filesystem(
            Path(request["workdir"]), request["uid"], limits.disk_mb, self.isolation, nameserver
        )
        os.chdir(workdir)
        os.environ.update(HOME=str(workdir), TMPDIR=str(workdir))
        confine.drop_privileges(request["uid"], self.isolation)
        confine.apply_limits(limits, self.isolation)  # lowering limits needs no privilege
        confine.die_with_parent()  # changing uid cleared it
        self.max_output_chars = request["max_output_chars"]
        self.session = Session(limits, request["timeout_s"])
        return {"event": "setup", "isolation": asdict(self.isolation)}

    def execute(self, action: Callable[[], str | None]) -> dict[str, Any]:
        assert self.session is not None
        limit = self.max_output_chars
        self.capture.begin(limit)
        ok, error, value = True, None, None
        try:
            result = action()
            value = None if result is None else truncate(result, limit)
        except BaseException as exc:
            ok, error = False, truncate(describe_exception(exc, self.session.limits), min(limit, ERROR_CHARS))
            self.capture.write(format_traceback(exc))
        return {"event": "result", "ok": ok, "output": self.capture.end(), "error": error, "value": value}
