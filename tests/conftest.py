"""Shared fixtures: a config writer pointed at a fake server. Helpers that tests import live in tests/support/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.files import ConfigWriter


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


@pytest.fixture(autouse=True)
def _session_config_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key that signs run folders as this user's (agenttrain/rundir/ownership.py) is the test session's own, not
    in the real ~/.config; a test that plays another user points XDG_CONFIG_HOME elsewhere."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.getbasetemp() / "config"))


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
