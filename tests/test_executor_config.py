"""The executor section: where rollouts run never changes what a run depends on; Ray only when asked for."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agenttrain import api
from agenttrain.config import ConfigError, load_experiment
from tests.support.fake_openai import FakeOpenAI
from tests.support.files import write_problems
from tests.support.scripted import multiplying_agent

PROBLEMS = [(f"What is {a} times 3?", str(a * 3)) for a in range(2, 5)]


def test_the_executor_is_not_part_of_what_results_depend_on(write_config, tmp_path):
    config = write_config("http://127.0.0.1:1/v1", write_problems(tmp_path / "p.jsonl", PROBLEMS))
    local = load_experiment(config)
    on_ray = load_experiment(config, ["executor.kind=ray", "executor.address=auto", "executor.rollouts_per_worker=4"])
    assert on_ray.executor.kind == "ray" and on_ray.content_hash() == local.content_hash()


@pytest.mark.parametrize("address", ["localhost", "ray://head", "http://head:10001", "ray://head:port"])
def test_an_address_that_ray_cannot_take_is_refused_naming_the_key(write_config, tmp_path, address):
    config = write_config("http://127.0.0.1:1/v1", write_problems(tmp_path / "p.jsonl", PROBLEMS))
    with pytest.raises(ConfigError, match=r"executor\.address"):
        load_experiment(config, [f"executor.address={address}"])


def test_ray_missing_is_one_clear_error_before_the_run_exists(write_config, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with FakeOpenAI(multiplying_agent) as server:
        config = write_config(server.base_url, write_problems(tmp_path / "p.jsonl", PROBLEMS))
        with pytest.raises(ConfigError, match=r"pip install 'agenttrain\[ray\]'"):
            api.train(config, ["executor.kind=ray"])
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_the_cli_and_a_local_run_never_import_ray(write_config, tmp_path):
    with FakeOpenAI(multiplying_agent) as server:
        config = write_config(server.base_url, write_problems(tmp_path / "p.jsonl", PROBLEMS),
                              optimizer={"epochs": 0})
        code = ("import sys, pathlib; from agenttrain import api, cli; api.train(pathlib.Path(sys.argv[1])); "
                "assert 'ray' not in sys.modules, 'ray was imported'")
        done = subprocess.run([sys.executable, "-c", code, str(config)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
