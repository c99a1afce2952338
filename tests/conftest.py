"""Shared fixtures: a config writer pointed at a fake server, and the location of the optional real data."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
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


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


@pytest.fixture
def write_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ConfigWriter:
    """Write an experiment YAML into tmp_path; runs and the cache stay inside tmp_path too."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    monkeypatch.chdir(tmp_path)

    def write(base_url: str, data_path: Path, **sections: Any) -> Path:
        config = {
            "name": "test",
            "task": {"name": "math", "path": str(data_path), "train_size": 2, "test_size": 1, "seed": 0},
            "agent": {"model": "agent-model", "max_turns": 4},
            "optimizer": {"model": "optimizer-model", "epochs": 2, "early_stop": 5},
            "llm": {"base_url": base_url, "cache_dir": str(tmp_path / "cache"), "max_retries": 0,
                    "max_outage_s": 3},
            "sandbox": {"timeout_s": 10, "warm_workers": 1},
            "output_dir": str(tmp_path / "runs"),
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(_merge(config, sections)), encoding="utf-8")
        return path

    return write
