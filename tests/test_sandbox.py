"""The sandbox: notebook semantics, learned functions, and hostile code that must not hurt the trainer.

Every hostile case checks three things: a prompt result with a clear `error`, the test process unharmed,
and the next call or session working. What depends on the machine (root or not, namespaces allowed or not)
is asserted only where `describe()` says it is enforced.
"""

from __future__ import annotations

import ast
import asyncio
import errno
import json
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agenttrain import api
from agenttrain.config import SandboxConfig
from agenttrain.functions import Function, FunctionSet
from agenttrain.sandbox import STATE_LOST, ExecResult, Sandbox, SandboxSession
from agenttrain.sandbox.isolation import STABLE_WORKDIR
from agenttrain.sandbox.packages import PackageEnvironment
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.files import child_processes, write_problems
from tests.support.scripted import question

pytestmark = pytest.mark.slow

T = TypeVar("T")
FAST = {"timeout_s": 2, "warm_workers": 1}


def function(name: str, code: str) -> Function:
    return Function(name, f"test function {name}", {"type": "object", "properties": {}}, code)


def with_sandbox(scenario: Callable[[Sandbox], Awaitable[T]], **settings: Any) -> T:
    async def main() -> T:
        sandbox = Sandbox(SandboxConfig(**{**FAST, **settings}))
        await sandbox.start()
        try:
            return await scenario(sandbox)
        finally:
            await sandbox.close()

    return asyncio.run(main())


def with_session(
    scenario: Callable[[SandboxSession], Awaitable[T]], functions: Sequence[Function] = (), **settings: Any
) -> T:
    async def in_session(sandbox: Sandbox) -> T:
        async with sandbox.session(FunctionSet(tuple(functions))) as session:
            return await scenario(session)

    return with_sandbox(in_session, **settings)


def run_blocks(*blocks: str, **settings: Any) -> list[ExecResult]:
    """Run code blocks one after another in one session."""

    async def scenario(session: SandboxSession) -> list[ExecResult]:
        return [await session.run_code(block) for block in blocks]

    return with_session(scenario, **settings)


@pytest.fixture(scope="module")
def enforced() -> dict[str, Any]:
    """What this machine enforces, as reported for run.json."""
    return Sandbox(SandboxConfig()).describe()


def processes_of(uid: int) -> list[int]:
    pids = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            uids = next(line for line in status.read_text().splitlines() if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue  # the process ended while we looked
        if int(uids.split()[1]) == uid:
            pids.append(int(status.parent.name))
    return pids


# --- notebook semantics ---------------------------------------------------------------------------------


def test_state_persists_across_blocks_of_a_session() -> None:
    first, second, last_expression = run_blocks("x = 2\nprint(x)", "print(x + 1)", "x * 10")
    assert (first.ok, first.output, first.error, first.value) == (True, "2\n", None, None)
    assert second.output == "3\n"
    assert last_expression.output == "20\n"  # like a notebook cell


def test_concurrent_sessions_have_separate_state() -> None:
    async def one(sandbox: Sandbox, value: int) -> str:
        async with sandbox.session(FunctionSet()) as session:
            await session.run_code(f"value = {value}")
            await asyncio.sleep(0.05)
            return (await session.run_code("print(value)")).output

    async def scenario(sandbox: Sandbox) -> list[str]:
        return list(await asyncio.gather(one(sandbox, 1), one(sandbox, 2)))

    assert with_sandbox(scenario) == ["1\n", "2\n"]


def test_state_does_not_leak_between_sessions() -> None:
    async def scenario(sandbox: Sandbox) -> ExecResult:
        async with sandbox.session(FunctionSet()) as session:
            await session.run_code("secret = 42\nimport sys; sys.modules['leak'] = sys")
        async with sandbox.session(FunctionSet()) as session:
            return await session.run_code("import sys\nprint('leak' in sys.modules)\nprint(secret)")

    result = with_sandbox(scenario)
    assert result.output.startswith("False\n")
    assert result.error == "NameError: name 'secret' is not defined"


def test_exception_gives_short_error_and_traceback_of_user_code_only() -> None:
    (result,) = run_blocks("def f():\n    return undefined_name\nf()")
    assert not result.ok
    assert result.error == "NameError: name 'undefined_name' is not defined"
    assert "<cell 1>" in result.output and "return undefined_name" in result.output
    assert "sandbox/worker" not in result.output
    assert result.as_observation().count("NameError") == 1


def test_syntax_error_names_the_line() -> None:
    (result,) = run_blocks("x = 1\ny = (")
    assert result.error == "SyntaxError: '(' was never closed (line 2)"


def test_files_are_copied_into_the_workdir_which_is_removed_afterwards(
    tmp_path: Path, enforced: dict[str, Any]
) -> None:
    data = tmp_path / "table.csv"
    data.write_text("a,b\n1,2\n")

    async def scenario(sandbox: Sandbox) -> tuple[Path, ExecResult, ExecResult]:
        async with sandbox.session(FunctionSet(), files=[data]) as session:
            read = await session.run_code("import os\nprint(os.getcwd())\nprint(open('table.csv').read())")
            write = await session.run_code("open('out.txt', 'w').write('ok')\nprint(open('out.txt').read())")
            return session.workdir, read, write

    workdir, read, write = with_sandbox(scenario)
    # with a mount namespace every session sees its folder at one fixed path, which keeps prompts cacheable
    seen = STABLE_WORKDIR if enforced["isolation"]["mount_namespace"] else workdir
    assert read.output == f"{seen}\na,b\n1,2\n\n"
    assert write.output == "ok\n"
    assert not workdir.exists()


def test_a_killed_trainer_leaves_no_workers_and_its_workdirs_are_swept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, enforced: dict[str, Any]
) -> None:
    trainer = (
        "import asyncio\n"
        "from agenttrain.config import SandboxConfig\n"
        "from agenttrain.functions import FunctionSet\n"
        "from agenttrain.sandbox import Sandbox\n"
        "async def main():\n"
        "    async with Sandbox(SandboxConfig(warm_workers=0)).session(FunctionSet()) as session:\n"
        "        await session.run_code('pass')\n"
        "        print(session.workdir, flush=True)\n"
        "        await session.run_code('import time; time.sleep(60)')\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    process = subprocess.Popen([sys.executable, "-c", trainer], stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    workdir = Path(process.stdout.readline().strip())
    session_uid = workdir.stat().st_uid
    process.kill()
    process.wait()
    assert workdir.is_dir()  # nobody could clean up
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    (result,) = run_blocks("print('alive')")
    assert result.output == "alive\n"
    assert not workdir.parent.exists()
    if enforced["isolation"]["uid"] is not None:
        assert processes_of(session_uid) == []  # they died with their parent


# --- learned functions ---------------------------------------------------------------------------------


def test_each_function_runs_its_own_code() -> None:
    functions = [
        function("first", "def first():\n    return 'one'\n"),
        function("second", "def second():\n    return 2\n"),
    ]

    async def scenario(session: SandboxSession) -> list[ExecResult]:
        return [await session.call_function("first", {}), await session.call_function("second", {})]

    first, second = with_session(scenario, functions)
    assert (first.ok, first.value, second.value) == (True, "one", "2")


def test_function_arguments_output_and_calls_from_code() -> None:
    add = function("add", "import sympy\n\ndef add(a, b):\n    print('adding')\n    return sympy.Integer(a) + b\n")
    twice = function("twice", "def twice(a):\n    return add(a, a)\n")  # functions may call each other

    async def scenario(session: SandboxSession) -> list[ExecResult]:
        return [
            await session.call_function("add", {"a": 2, "b": 3}),
            await session.call_function("twice", {"a": 4}),
            await session.run_code("from functions import add\nprint(add(1, 1), twice(5))"),
            await session.call_function("add", {"c": 1}),
        ]

    direct, nested, from_code, bad_arguments = with_session(scenario, [add, twice])
    assert (direct.ok, direct.output, direct.value) == (True, "adding\n", "5")
    assert nested.value == "8"
    assert from_code.output == "adding\nadding\n2 10\n"
    assert not bad_arguments.ok and "unexpected keyword argument 'c'" in (bad_arguments.error or "")


def test_a_function_that_fails_to_load_does_not_break_the_others() -> None:
    functions = [
        function("broken", "def broken(:\n    return 1\n"),
        function("needs_missing", "import no_such_module_xyz\n\ndef needs_missing():\n    return 1\n"),
        function("fine", "def fine():\n    return 'fine'\n"),
        function("hangs", "while True:\n    pass\n\ndef hangs():\n    return 1\n"),
    ]

    async def scenario(session: SandboxSession) -> list[ExecResult]:
        names = ["broken", "needs_missing", "fine", "hangs", "not_defined"]
        return [*[await session.call_function(n, {}) for n in names], await session.run_code("broken()")]

    broken, missing, fine, hangs, unknown, from_code = with_session(scenario, functions, timeout_s=1)
    assert broken.error == "ImportError: function 'broken' failed to load: SyntaxError: invalid syntax (line 1)"
    assert not missing.ok and "No module named 'no_such_module_xyz'" in (missing.error or "")
    assert (fine.ok, fine.value) == (True, "fine")
    assert not hangs.ok and "failed to load: TimeoutError: took longer than 1s" in (hangs.error or "")
    assert not unknown.ok and "defined: broken, needs_missing, fine, hangs" in (unknown.error or "")
    assert from_code.error == broken.error


# --- limits ---------------------------------------------------------------------------------------------


def test_infinite_loop_times_out_and_the_session_continues_with_fresh_state() -> None:
    before, loop, after = run_blocks("x = 1", "while True:\n    pass", "print('x' in globals())", timeout_s=1)
    assert before.ok
    assert (loop.ok, loop.error) == (False, "timeout after 1s")
    assert STATE_LOST in loop.output
    assert 1 <= loop.duration_s < 3
    assert after.output == "False\n"


def test_cpu_time_limit() -> None:
    loop, after = run_blocks("while True:\n    pass", "print('alive')", timeout_s=10, cpu_s=1)
    assert loop.error == "CPU time limit exceeded (1 s)"
    assert loop.duration_s < 10  # the CPU limit ended it, not the wall-clock timeout (slow only on a busy machine)
    assert after.output == "alive\n"


@pytest.mark.parametrize(
    "bomb", ["x = bytearray(4 * 1024**3)", "chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))"]
)
def test_memory_bomb_is_stopped(bomb: str) -> None:
    result, after = run_blocks(bomb, "print('alive')", memory_mb=400)
    assert (result.ok, result.error) == (False, "memory limit exceeded (400 MB)")
    assert "MemoryError" in result.output
    assert after.output == "alive\n"


def test_exit_and_segfault_are_reported_and_the_worker_replaced() -> None:
    exits, segfault, after = run_blocks("import os\nos._exit(3)", "import ctypes\nctypes.string_at(0)", "print(1)")
    assert (exits.ok, exits.error) == (False, "exited with status 3")
    assert (segfault.ok, segfault.error) == (False, "killed by signal 11 (SIGSEGV)")
    assert STATE_LOST in segfault.output
    assert after.output == "1\n"


def test_huge_output_is_truncated_without_buffering_it() -> None:
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    flood = "import sys\nfor _ in range(100):\n    sys.stdout.write('x' * 2**20)"
    result, after = run_blocks(flood, "print('alive')", max_output_chars=1000)
    rss_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert result.ok
    assert result.output == "x" * 1000 + f"\n[... output truncated: {100 * 2**20 - 1000} more characters]"
    assert rss_growth_mb < 30
    assert after.output == "alive\n"


def test_large_return_value_is_truncated() -> None:
    big = function("big", "def big():\n    return 'v' * 5000\n")
    result = with_session(lambda session: session.call_function("big", {}), [big], max_output_chars=100)
    assert result.value == "v" * 100 + "\n[... output truncated: 4900 more characters]"


def run_and_find_survivors(block: str, **settings: Any) -> tuple[ExecResult, list[int], ExecResult]:
    """Run `block`; return its result, the processes of its session's uid left afterwards, and a next session's
    result."""

    async def scenario(sandbox: Sandbox) -> tuple[ExecResult, list[int], ExecResult]:
        async with sandbox.session(FunctionSet()) as session:
            uid = int((await session.run_code("import os\nprint(os.getuid())")).output)
            result = await session.run_code(block)
        async with sandbox.session(FunctionSet()) as session:
            after = await session.run_code("print('alive')")
        return result, processes_of(uid), after

    return with_sandbox(scenario, **settings)


def test_fork_bomb_is_contained_and_fully_killed(enforced: dict[str, Any]) -> None:
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    result, survivors, after = run_and_find_survivors(bomb, timeout_s=1, max_processes=32)
    assert (result.ok, result.error) == (False, "timeout after 1s")
    assert after.output == "alive\n"
    if enforced["isolation"]["uid"] is None:
        pytest.skip("no throwaway uid on this machine (not root): stray processes are not tracked by uid")
    assert survivors == []


def test_processes_ignoring_sigterm_and_leaving_the_group_are_killed(enforced: dict[str, Any]) -> None:
    stubborn = (
        "import signal, subprocess, sys, time\n"
        "ignore = 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'\n"
        "subprocess.Popen([sys.executable, '-c', ignore], start_new_session=True)\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "time.sleep(60)"
    )
    result, survivors, after = run_and_find_survivors(stubborn, timeout_s=1)
    assert result.error == "timeout after 1s"
    assert after.output == "alive\n"
    if not enforced["kills_detached_processes"] or enforced["isolation"]["uid"] is None:
        pytest.skip("no PID namespace here: a process that leaves the process group survives the kill")
    assert survivors == []


def test_process_count_is_limited(enforced: dict[str, Any]) -> None:
    if not enforced["process_limit_enforced"]:
        pytest.skip("no uid of its own for the worker here (not root), so RLIMIT_NPROC is not set")
    spawn = (
        "import subprocess\nchildren = []\n"
        "try:\n    for _ in range(50):\n        children.append(subprocess.Popen(['sleep', '5']))\n"
        "except OSError as exc:\n    print(type(exc).__name__)\n"
        "print(len(children))\nfor child in children:\n    child.kill()"
    )
    (result,) = run_blocks(spawn, max_processes=10)
    failure, started = result.output.split()
    assert failure in {"BlockingIOError", "OSError"}
    assert int(started) < 10


def test_file_size_limit() -> None:
    (result,) = run_blocks("open('big.bin', 'wb').write(b'0' * 3 * 1024 * 1024)", max_file_mb=1)
    assert not result.ok
    assert result.error == "OSError: [Errno 27] File too large"


# --- environment, filesystem, network -------------------------------------------------------------------


def test_secrets_in_our_environment_are_not_visible(monkeypatch: pytest.MonkeyPatch, enforced: dict[str, Any]) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-sandbox-test-secret")
    monkeypatch.setenv("AGENTTRAIN_ALLOWED", "visible")
    scan = (
        "import glob, os\n"
        "print(os.environ.get('OPENAI_API_KEY'), os.environ.get('AGENTTRAIN_ALLOWED'))\n"
        "found = []\n"
        "for path in glob.glob('/proc/*/environ'):\n"
        "    try:\n        found += [path] if b'sk-sandbox-test-secret' in open(path, 'rb').read() else []\n"
        "    except OSError:\n        pass\n"
        "print(found)"
    )
    (result,) = run_blocks(scan, env_allow=["AGENTTRAIN_ALLOWED"])
    variables, readable_elsewhere = result.output.splitlines()
    assert variables == "None visible"
    if enforced["isolation"]["uid"] is None and not enforced["isolation"]["pid_namespace"]:
        pytest.skip("the worker runs as our own user and sees our processes here, so it could read their environ")
    assert readable_elsewhere == "[]"


def test_writing_outside_the_workdir(tmp_path: Path, enforced: dict[str, Any]) -> None:
    isolation = enforced["isolation"]
    if isolation["uid"] is None and not isolation["private_dirs"]:
        pytest.skip(f"nothing prevents writes outside the workdir on this machine: {isolation['notes']}")
    ours = tmp_path / "written-by-sandbox.txt"
    project = Path(__file__).resolve().parent / "written-by-sandbox.txt"
    shared_tmp = Path("/tmp") / f"agenttrain-test-{os.getpid()}.txt"
    blocks = [f"open({str(p)!r}, 'w').write('x')" for p in (ours, project, shared_tmp)]
    results = run_blocks(*blocks)
    for path, result in zip((ours, project, shared_tmp), results, strict=True):
        assert not path.exists(), f"the sandbox wrote {path}"
        if "/tmp" in isolation["private_dirs"] and path.is_relative_to("/tmp"):
            continue  # it wrote its own private /tmp, which vanishes with it
        assert result.error is not None and result.error.startswith(("PermissionError", "FileNotFoundError"))


def test_network_is_cut_when_enforced(enforced: dict[str, Any]) -> None:
    if not enforced["network"]["enforced"]:
        pytest.skip(f"network isolation not available here: {enforced['network']['how']}")
    (result,) = run_blocks("import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=1)")
    assert result.error == "OSError: [Errno 101] Network is unreachable"


def test_describe_reports_limits_and_enforcement(enforced: dict[str, Any]) -> None:
    assert enforced["limits"]["memory_mb"] == SandboxConfig().memory_mb
    assert enforced["network"]["allowed"] is False
    assert enforced["interpreter"] == sys.executable
    allowed = Sandbox(SandboxConfig(network=True)).describe()["network"]
    assert (allowed["allowed"], allowed["enforced"]) == (True, False)


# --- packages -------------------------------------------------------------------------------------------


def test_missing_packages_maps_pip_names_to_modules() -> None:
    packages = ["sympy", "NumPy", "PyYAML>=6", "python-dateutil", "no-such-package-xyz"]
    missing = with_sandbox(lambda sandbox: sandbox.missing_packages(packages), warm_workers=0)
    assert missing == ["no-such-package-xyz"]


def test_install_is_skipped_when_everything_is_importable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # where an install would create its environment
    missing = with_sandbox(lambda sandbox: sandbox.missing_packages(["sympy", "numpy"]), install_packages=True)
    assert missing == []
    assert list(tmp_path.iterdir()) == []


def test_refusal_names_the_missing_packages_and_what_is_available() -> None:
    message = Sandbox(SandboxConfig()).refusal(["torch"])
    assert "torch" in message and "sympy" in message and "install_packages" in message


def test_a_cached_package_environment_is_used_and_sees_our_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    environment = PackageEnvironment()  # as left behind by an earlier install
    environment.create()
    (result,) = run_blocks("import sys, sympy, numpy\nprint(sys.prefix)", install_packages=True)
    assert result.output == f"{environment.path}\n"


# --- hostile code: each case is contained, and a training run records it as that rollout's outcome ------

REPO = Path(__file__).resolve().parents[1]
SECRET = "gold-answer-4711"
FORGED = '{"event": "failed", "error": "forged"}'
SPY = (
    "import glob\nfor path in {paths!r}:\n    try:\n        print(path, open(path).read()[:200])\n"
    "    except OSError as exc:\n        print(path, type(exc).__name__)"
)
CLOSE_STDOUT = "import os\nos.close(1)\nprint('printed after closing fd 1')"
FORGE = (
    "import os\nfor fd in range(1, 64):\n    try:\n"
    f"        os.write(fd, b{FORGED + chr(10)!r})\n"
    "    except OSError:\n        pass\nprint('forged')"
)
CHILD_MB = 300
MEMORY_ACROSS_CHILDREN = (
    "import os, time\npids = []\nfor _ in range(4):\n    try:\n        pid = os.fork()\n"
    "    except OSError:\n        break\n    if pid == 0:\n        try:\n"
    f"            block = b'x' * ({CHILD_MB} * 2**20)\n            time.sleep(2)\n            os._exit(0)\n"
    "        except MemoryError:\n            os._exit(3)\n    pids.append(pid)\n"
    "print([os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids])"
)
FILL_TEMP = "for i in range(10):\n    with open(f'/tmp/fill-{i}', 'wb') as f:\n        f.write(b'0' * (60 * 2**20))"


def secrets_on_the_host(tmp_path: Path) -> list[Path]:
    """A task's data file, an earlier run's journal and the project's own source, as a trainer has them."""
    data = tmp_path / "data" / "problems.jsonl"
    journal = tmp_path / "runs" / "earlier-20260101-000000" / "events.jsonl"
    for path in (data, journal):
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"answer": SECRET}) + "\n")
    return [data, journal, REPO / "agenttrain" / "sandbox" / "worker.py", REPO / "pyproject.toml"]


def require_sealed(enforced: dict[str, Any]) -> None:
    if not enforced["isolation"]["sealed"]:
        pytest.skip(f"the filesystem cannot be sealed here: {enforced['filesystem']}")


def test_code_cannot_read_task_data_runs_or_the_project(tmp_path: Path, enforced: dict[str, Any]) -> None:
    require_sealed(enforced)
    paths = [str(p) for p in secrets_on_the_host(tmp_path)]
    (result,) = run_blocks(SPY.format(paths=paths))
    assert result.output.splitlines() == [f"{path} FileNotFoundError" for path in paths]


# Escapes that capabilities would allow: code run by a non-root user's sandbox must hold none.
ESCAPES = {
    "capabilities": "print(*[line.split()[1] for line in open('/proc/self/status') if line.startswith('Cap')])",
    "chroot": "import os\nos.mkdir('x')\nos.chroot('x')",
    "unmount": "import ctypes\nprint(ctypes.CDLL(None, use_errno=True).umount2(b'/', 2), ctypes.get_errno())",
    "new user namespace": "import ctypes\nprint(ctypes.CDLL(None).unshare(0x10000000))",
    "kill the trainer": "import os\nos.kill({trainer}, 9)",
}
AS_NON_ROOT = """
import asyncio, json, os, sys
from agenttrain.config import SandboxConfig
from agenttrain.functions import FunctionSet
from agenttrain.sandbox import Sandbox

async def main(blocks):
    sandbox = Sandbox(SandboxConfig())
    await sandbox.start()
    try:
        outcomes = {}
        for name, code in blocks.items():
            async with sandbox.session(FunctionSet()) as session:
                result = await session.run_code(code.format(trainer=os.getpid()))
                outcomes[name] = (result.output + (result.error or "")).strip().splitlines()[-1]
        return {"uid": os.geteuid(), "outcomes": outcomes, "sandbox": sandbox.describe()}
    finally:
        await sandbox.close()

print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))))
"""


def test_a_non_root_user_gets_a_sealed_sandbox_whose_code_holds_no_capability(tmp_path: Path) -> None:
    """Most users are not root: their sandbox is built in a user namespace of its own, sealed the same way, and
    the code holds none of the capabilities that built it (which could undo the seal). Run here as uid 1000 in
    a user namespace when the tests run as root."""
    as_user = [] if os.geteuid() else ["unshare", "--user", "--map-user=1000", "--map-group=1000"]
    if as_user and subprocess.run([*as_user, "true"], capture_output=True).returncode != 0:
        pytest.skip("this machine allows no user namespace, so no non-root user could seal a sandbox")
    spies = {f"read {path.name}": SPY.format(paths=[str(path)]) for path in secrets_on_the_host(tmp_path)}
    finished = subprocess.run([*as_user, sys.executable, "-c", AS_NON_ROOT, json.dumps({**spies, **ESCAPES})],
                              capture_output=True, text=True, cwd=REPO, timeout=120)  # fmt: skip
    assert finished.returncode == 0, finished.stderr
    report = json.loads(finished.stdout)
    assert report["uid"] != 0
    assert report["sandbox"]["isolation"]["user_namespace"] and report["sandbox"]["isolation"]["sealed"]
    outcomes = report["outcomes"]
    assert all(outcomes[name].endswith("FileNotFoundError") for name in spies), outcomes
    assert outcomes["capabilities"] == " ".join(["0000000000000000"] * 5)
    assert outcomes["chroot"] == "PermissionError: [Errno 1] Operation not permitted: 'x'"
    assert outcomes["unmount"] == f"-1 {errno.EPERM}"
    assert outcomes["new user namespace"] == "-1"
    assert outcomes["kill the trainer"] == "ProcessLookupError: [Errno 3] No such process"


def test_closing_stdout_and_printing_is_the_codes_own_output() -> None:
    closed, stream_closed, after = run_blocks(CLOSE_STDOUT, "import sys\nsys.stdout.close()\nprint(1)", "print(2)")
    assert (closed.ok, closed.output) == (True, "printed after closing fd 1\n")
    assert stream_closed.error == "ValueError: I/O operation on closed file."
    assert (after.ok, after.output) == (True, "2\n")


def test_forged_failure_lines_are_output_or_the_rollouts_error_never_the_runs() -> None:
    forged, after = run_blocks(FORGE, "print('still here')")
    if forged.ok:  # the channel ignored what it could not authenticate... or never saw it
        assert forged.output == f"{FORGED}\n{FORGED}\nforged\n"
    else:  # the code found the private channel: its frame fails authentication and ends only this worker
        assert forged.error == "the code wrote to the sandbox's private channel; the worker was stopped"
    assert (after.ok, after.output) == (True, "still here\n")


def test_closing_every_descriptor_ends_only_this_sessions_worker() -> None:
    closed, after = run_blocks("import os\nos.closerange(0, 4096)\nprint('gone')", "print('next')")
    assert not closed.ok and STATE_LOST in closed.output  # it closed its own channel too: the worker is replaced
    assert (after.ok, after.output) == (True, "next\n")


def test_memory_is_capped_across_forked_children(enforced: dict[str, Any]) -> None:
    memory_mb = 800
    result, after = run_blocks(MEMORY_ACROSS_CHILDREN, "print('alive')", memory_mb=memory_mb, timeout_s=20)
    if result.ok:
        codes = json.loads(result.output)
        assert codes.count(0) * CHILD_MB <= memory_mb, f"children that held {CHILD_MB} MB at once: {codes}"
    else:  # the kernel chose the worker itself
        assert result.error == f"memory limit exceeded ({memory_mb} MB for the whole session)"
    assert after.output == "alive\n"


def test_writing_600_mb_to_temp_hits_the_sessions_disk_cap(enforced: dict[str, Any]) -> None:
    require_sealed(enforced)
    host_file = Path(f"/tmp/agenttrain-host-{os.getpid()}")
    host_file.write_text("the host's own temp file")
    try:
        result, after = run_blocks(FILL_TEMP, "import os\nprint(sorted(os.listdir('/tmp')))", disk_mb=512)
    finally:
        host_file.unlink()
    assert not result.ok
    assert result.error is not None and result.error.startswith("disk limit exceeded (512 MB for the session's files)")
    seen = ast.literal_eval(after.output)
    assert {"fill-0", "fill-1"} <= set(seen)  # its own private /tmp, still there for the session
    assert host_file.name not in seen  # (a venv under /tmp shows as its mount point's folders; nothing else)
    assert not Path("/tmp/fill-0").exists()  # it all went into the session's tmpfs, never to the host's disk


def test_a_training_run_records_hostile_code_as_rollouts(
    write_config: Callable[..., Path], tmp_path: Path, enforced: dict[str, Any]
) -> None:
    require_sealed(enforced)
    secrets = secrets_on_the_host(tmp_path)
    blocks = {
        "spy": SPY.format(paths=[str(p) for p in secrets]) + "\nprint(glob.glob('" + str(tmp_path) + "/**'))",
        "close": CLOSE_STDOUT,
        "forge": FORGE,
        "memory": MEMORY_ACROSS_CHILDREN,
        "fill": FILL_TEMP,
    }

    def agent(body: dict[str, Any]) -> Reply:  # one code block, then the answer whatever the block printed
        if len(body["messages"]) > 2:
            return Reply(content="\\boxed{1}")
        return Reply(content=f"```python\n{blocks[question(body)]}\n```")

    problems = [(name, "1") for name in blocks]
    data = write_problems(tmp_path / "problems.jsonl", problems)
    with FakeOpenAI(agent) as server:
        config = write_config(server.base_url, data, task={"train_size": len(problems), "test_size": 0},
                              optimizer={"epochs": 0}, sandbox={"memory_mb": 800, "timeout_s": 20})  # fmt: skip
        outcome = api.train(config)
    assert outcome.status == "finished"
    records = {r.question: r for r in outcome.run.snapshot(0).rollouts()}
    assert sorted(records) == sorted(blocks)
    assert all(r.correct for r in records.values())
    seen = {name: record.messages[3]["content"] for name, record in records.items()}  # what the code printed
    assert SECRET not in seen["spy"] and "FileNotFoundError" in seen["spy"]
    assert "printed after closing fd 1" in seen["close"]
    assert "disk limit exceeded" in seen["fill"]
    assert "private channel" in seen["forge"] or seen["forge"].endswith("forged")
    sandbox = outcome.run.info().sandbox
    assert sandbox is not None
    assert sandbox["isolation"]["sealed"] and sandbox["start"]["method"] == "fork server"


def test_garbage_written_to_the_workers_own_pipes_is_reported_not_fatal() -> None:
    garbage = (
        "import os\nfor fd in range(3, 12):\n    try:\n        os.write(fd, b'not json\\n')\n"
        "    except OSError:\n        pass"
    )
    hit, after = run_blocks(garbage, "print('still here')")
    assert not hit.ok or "not json" not in hit.output
    assert after.ok and after.output == "still here\n"


def test_a_session_offered_functions_starts_its_worker_early_and_leaves_none_behind_unused(
    enforced: dict[str, Any],
) -> None:
    """The worker of a session with functions starts before the first call (hiding its start-up behind the model's
    first turn); a rollout that never calls one must not leave that worker running."""
    if enforced["isolation"]["uid"] is None:
        pytest.skip("sessions share our uid here, so their processes cannot be told apart")
    hello = function("hello", "def hello():\n    return 'hi'\n")

    async def scenario(sandbox: Sandbox) -> tuple[list[int], list[int], ExecResult]:
        async with sandbox.session(FunctionSet((hello,))) as session:
            uid = session._setup["uid"]
            for _ in range(200):  # started without any call
                if processes_of(uid):
                    break
                await asyncio.sleep(0.05)
            early = processes_of(uid)
        left = processes_of(uid)
        async with sandbox.session(FunctionSet((hello,))) as session:
            called = await session.call_function("hello", {})
        return early, left, called

    early, left, called = with_sandbox(scenario)
    assert early, "no worker was started before the first call"
    assert left == []
    assert called.value == "hi"


def test_a_sandbox_started_in_the_background_serves_the_first_session_and_closes_cleanly_mid_start() -> None:
    """Training starts the sandbox during the model's first turn: a session opened at once waits for the start,
    and a run stopped in its first instant (Ctrl-C) leaves no template process behind."""
    templates = b"agenttrain.sandbox.forkserver"

    async def first_session_at_once() -> ExecResult:
        sandbox = Sandbox(SandboxConfig(**FAST))
        sandbox.start_soon()
        try:
            async with sandbox.session(FunctionSet()) as session:
                return await session.run_code("print(6 * 7)")
        finally:
            await sandbox.close()

    async def closed_mid_start() -> None:
        sandbox = Sandbox(SandboxConfig(**FAST))
        sandbox.start_soon()
        await asyncio.sleep(0.05)  # the template is still importing
        await sandbox.close()

    assert asyncio.run(first_session_at_once()).output == "42\n"
    asyncio.run(closed_mid_start())
    assert child_processes(templates) == set()


def test_a_template_launched_before_any_event_loop_is_adopted_by_the_start_or_stopped_by_the_close() -> None:
    """`train` launches the template as soon as the config is loaded, before its event loop runs: the start adopts
    that template (one template, not two), and a run refused before it starts (its endpoint is down) stops it."""
    templates = b"agenttrain.sandbox.forkserver"
    others = child_processes(templates)

    async def session_of_launched(sandbox: Sandbox) -> tuple[ExecResult, set[int]]:
        try:
            async with sandbox.session(FunctionSet()) as session:
                return await session.run_code("print(6 * 7)"), child_processes(templates) - others
        finally:
            await sandbox.close()

    launched = Sandbox(SandboxConfig(**FAST))
    launched.launch()
    (template,) = child_processes(templates) - others
    result, running = asyncio.run(session_of_launched(launched))
    assert (result.output, running) == ("42\n", {template})
    assert launched.describe()["start"]["method"] == "fork server"
    refused = Sandbox(SandboxConfig(**FAST))
    refused.launch()
    asyncio.run(refused.close())
    assert child_processes(templates) == others
