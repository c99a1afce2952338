"""An optimizer's `packages` are package names, never pip options: what is not one is refused before any process
starts, and pip itself runs with options that let no package string or package build steer it."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from agenttrain.config import SandboxConfig
from agenttrain.errors import UserError
from agenttrain.sandbox import Sandbox
from agenttrain.sandbox.packages import PackageEnvironment

pytestmark = pytest.mark.slow  # each test opens sandbox sessions

# Each with the words its refusal must contain.
NOT_PACKAGE_NAMES = {
    "--index-url=http://evil.example/simple": "not a package name",
    "-r /etc/passwd": "not a package name",
    "git+https://github.com/someone/thing": "not a package name",
    "./local": "not a package name",
    "/etc/passwd": "not a package name",
    "foo @ https://evil.example/foo.whl": "a URL",
    'foo; os_name=="posix"': "environment markers",
    "numpy\n--extra-index-url=http://evil.example": "not a package name",
    "": "not a package name",
}


def refuse_spawning(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Record any attempt to start a process (pip, or the interpreter that looks for modules) and refuse it."""
    spawned: list[tuple[Any, ...]] = []

    async def spawn(*args: Any, **kwargs: Any) -> Any:
        spawned.append(args)
        raise AssertionError(f"a process was started: {args}")

    monkeypatch.setattr(asyncio, "create_subprocess_exec", spawn)
    return spawned


@pytest.mark.parametrize("text", sorted(NOT_PACKAGE_NAMES))
def test_what_is_not_a_package_name_is_refused_with_the_reason_before_any_process_starts(
    text: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    spawned = refuse_spawning(monkeypatch)
    sandbox = Sandbox(SandboxConfig(install_packages=True))
    with pytest.raises(UserError) as refused:
        asyncio.run(sandbox.missing_packages(["sympy", text]))
    assert NOT_PACKAGE_NAMES[text] in str(refused.value)
    assert repr(text) in str(refused.value)  # it names the offending entry
    assert spawned == []
    assert list(tmp_path.iterdir()) == []  # no environment was created either


def test_pip_gets_the_names_after_its_options_and_may_neither_build_nor_ask(tmp_path: Path) -> None:
    environment = PackageEnvironment(tmp_path)
    command = environment.pip_command(["requests[socks]>=2.31", "python-dateutil"])
    assert command[:3] == [sys.executable, "-m", "pip"]
    separator = command.index("--")
    assert command[separator + 1 :] == ["requests[socks]>=2.31", "python-dateutil"]
    options = command[:separator]
    assert "--only-binary=:all:" in options  # no setup.py of a package runs as the trainer's user
    assert "--no-input" in options
    assert ["--python", str(environment.python)] == options[options.index("--python") : options.index("--python") + 2]


def test_pip_command_refuses_what_is_not_a_package_name(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a package name"):
        PackageEnvironment(tmp_path).pip_command(["--index-url=http://evil.example/simple"])


def test_valid_names_still_reach_the_import_check(monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox = Sandbox(SandboxConfig(warm_workers=0))
    missing = asyncio.run(sandbox.missing_packages(["sympy", "NumPy>=1.20", "PyYAML[extra]", "no-such-package-xyz"]))
    assert missing == ["no-such-package-xyz"]
