"""The program a sandbox worker runs: model-written code executes here, never in the trainer.

Started by sandbox_pool.py as `python -c "...main()" SETTINGS`. Three processes, so that one kill ends it all:

    launcher   unshares the namespaces, then waits (it is the process the trainer spawned and kills)
    └─ init    PID 1 of the new PID namespace: reaps orphans, reports how the worker ended
       └─ worker   imports sympy/numpy while idle in the warm pool, then serves one session

Protocol: one JSON object per line. Requests arrive on the original stdin; replies go to the original stdout.
The worker's own fds 0/1/2 are /dev/null and a capture pipe, so user code can neither read requests nor
forge replies by printing.
"""

from __future__ import annotations

import ast
import builtins
import codecs
import contextlib
import io
import json
import linecache
import os
import signal
import sys
import threading
import traceback
import types
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, BinaryIO

from agenttrain import sandbox_isolation as confine

FUNCTIONS_MODULE = "functions"  # code blocks may `from functions import name`


class Channel:
    """The request/reply pipe to the trainer, moved off fds 0 and 1 so user code cannot touch it."""

    def __init__(self) -> None:
        self._requests: BinaryIO = os.fdopen(os.dup(0), "rb")
        self._replies = os.dup(1)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1):
            os.dup2(null, fd)
        os.close(null)

    def receive(self) -> dict[str, Any] | None:
        line = self._requests.readline()
        return json.loads(line) if line else None

    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message) + "\n").encode()
        while data:
            data = data[os.write(self._replies, data) :]


def truncation_note(dropped: int) -> str:
    return f"\n[... output truncated: {dropped} more characters]" if dropped else ""


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
        self._stream = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace")
        self._lock = threading.Lock()
        self._call_done = threading.Event()
        self.begin(limit=0)
        threading.Thread(target=self._drain, name="output-capture", daemon=True).start()

    def begin(self, limit: int) -> None:
        sys.stdout = sys.stderr = self._stream  # one stream, so prints and tracebacks keep their order
        with self._lock:
            self._kept: list[str] = []
            self._limit, self._kept_chars, self._dropped = limit, 0, 0
            self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
            self._call_done.clear()

    def end(self) -> str:
        self._stream.flush()
        os.write(self._marker_fd, self._marker)
        self._call_done.wait()
        with self._lock:
            return "".join(self._kept) + truncation_note(self._dropped)

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


def describe_exception(exc: BaseException, memory_mb: int) -> str:
    if isinstance(exc, MemoryError):
        return f"memory limit exceeded ({memory_mb} MB)"
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

    def __init__(self, memory_mb: int, load_timeout_s: float) -> None:
        self.memory_mb = memory_mb
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
                self.functions[name] = _failed_function(name, describe_exception(exc, self.memory_mb))
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
    """Serves requests for one session; lives in the warm pool until a `setup` request arrives."""

    def __init__(self, channel: Channel, isolation: confine.Isolation) -> None:
        self.channel = channel
        self.isolation = isolation
        self.capture = OutputCapture()
        self.session: Session | None = None
        self.max_output_chars = 0

    def serve(self) -> None:
        self.channel.send({"event": "ready"})
        while (request := self.channel.receive()) is not None:
            try:
                self.channel.send(self.handle(request))
            except Exception:
                self.channel.send({"event": "failed", "error": traceback.format_exc()})

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        if request["op"] == "setup":
            return self.setup(request)
        session = self.session
        if session is None:
            raise RuntimeError("request before setup")
        if request["op"] == "run":
            return self.execute(lambda: session.run_code(request["code"]))
        if request["op"] == "call":
            return self.execute(lambda: session.call_function(request["name"], request["arguments"]))
        raise ValueError(f"unknown request {request['op']!r}")

    def setup(self, request: dict[str, Any]) -> dict[str, Any]:
        limits = confine.Limits(**request["limits"])
        workdir = confine.build_filesystem_view(Path(request["workdir"]), limits.max_file_mb, self.isolation)
        os.chdir(workdir)
        os.environ.update(HOME=str(workdir), TMPDIR=str(workdir))
        confine.drop_privileges(request["uid"], self.isolation)
        confine.apply_limits(limits, self.isolation)  # lowering limits needs no privilege
        confine.die_with_parent()  # changing uid cleared it
        self.max_output_chars = request["max_output_chars"]
        session = self.session = Session(limits.memory_mb, request["timeout_s"])
        self.execute(lambda: session.load_functions(request["functions"]))  # load errors surface on call
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
            ok, error = False, describe_exception(exc, self.session.memory_mb)
            sys.stdout.write(format_traceback(exc))
        return {"event": "result", "ok": ok, "output": self.capture.end(), "error": error, "value": value}


def run_launcher(channel: Channel, network: bool, preload: list[str]) -> None:
    """The process the trainer spawned: enter namespaces, start init, wait, and go when it goes."""
    confine.die_with_parent()
    isolation = confine.Isolation()
    confine.enter_namespaces(network, isolation)
    init = os.fork()
    if init == 0:
        run_init(channel, isolation, preload)
    os.waitpid(init, 0)


def run_init(channel: Channel, isolation: confine.Isolation, preload: list[str]) -> None:
    """Reap every process of the namespace; when the worker ends, say how, and end the namespace with it."""
    confine.die_with_parent()
    confine.adopt_orphans()
    worker = os.fork()
    if worker == 0:
        run_worker(channel, isolation, preload)
    while True:
        pid, status = os.wait()
        if pid == worker:
            with contextlib.suppress(OSError):  # nobody may be listening any more
                channel.send({"event": "exit", "status": status})
            os._exit(0)


def run_worker(channel: Channel, isolation: confine.Isolation, preload: list[str]) -> None:
    confine.die_with_parent()
    for module in preload:
        __import__(module)
    Worker(channel, isolation).serve()
    os._exit(0)


def main() -> None:
    settings = json.loads(sys.argv[1])
    run_launcher(Channel(), settings["network"], settings["preload"])


if __name__ == "__main__":
    main()
