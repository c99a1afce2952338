"""Files and processes the tests share: the repository's paths, the optional real data beside it, MATH-format
problem files, and this process's children."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"

ConfigWriter = Callable[..., Path]


def shared_data(relative: str) -> Path:
    """A file under ../shared/data, or a visible skip when this clone has none."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real data not found: {path} (only present beside the project's own checkout)")
    return path


def child_processes(marker: bytes) -> set[int]:
    """The pids of this process's children whose command line contains `marker`."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue  # not a process, or one that just ended
        if parent == os.getpid() and marker in command:
            found.add(int(entry.name))
    return found


def write_problems(path: Path, problems: list[tuple[str, str]], kind: str = "Algebra") -> Path:
    """MATH-format records: (problem text, answer); the problem text doubles as the id the fake server reads."""
    with open(path, "w", encoding="utf-8") as handle:
        for i, (problem, answer) in enumerate(problems):
            record = {"unique_id": f"p{i}", "problem": problem, "solution": f"So \\boxed{{{answer}}}.",
                      "level": "Level 1", "type": kind}
            handle.write(json.dumps(record) + "\n")
    return path
