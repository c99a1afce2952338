"""Hostile configs: YAML whose aliases expand past a sane size ("billion laughs"), that nests past a sane depth, or that
holds text that is not valid Unicode is one clear line and exit 2 from `validate` and `train` alike, before any run
folder is made; the same for sweep files, `--set` values and a run folder's config.yaml."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from agenttrain import api
from agenttrain.config import MAX_YAML_VALUES, ConfigError, load_experiment, load_yaml, parse_overrides
from agenttrain.errors import UserError
from agenttrain.rundir.directory import RunDir
from agenttrain.sweeping.plan import plan_sweep
from tests.support.run_factory import story_run

BASE = "name: bomb\ntask: {name: math, path: problems.jsonl}\n"
LAUGHS = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 10))
BILLION_LAUGHS = "l0: &l0 [lol]\n" + LAUGHS + "agent: {extra_body: {x: *l9}}\n"
DEEP = "agent: {extra_body: {x: " + "[" * 5000 + "]" * 5000 + "}}\n"
SHALLOW_BUT_PAST_THE_LIMIT = "agent: {extra_body: {x: " + "[" * 150 + "]" * 150 + "}}\n"
RECURSIVE = "agent: {extra_body: {x: &loop [*loop]}}\n"
SURROGATE = 'agent: {model: "gpt\\ud800"}\n'
HOSTILE = {"billion laughs": (BILLION_LAUGHS, "aliases expand to more than"),
           "deep": (DEEP, "nested deeper than"),
           "past the limit": (SHALLOW_BUT_PAST_THE_LIMIT, "nested deeper than"),
           "recursive": (RECURSIVE, "refers to itself"),
           "surrogate": (SURROGATE, "not valid Unicode")}


def config(tmp_path: Path, body: str) -> Path:
    (tmp_path / "problems.jsonl").write_text("")
    path = tmp_path / "config.yaml"
    path.write_text(BASE + body, encoding="utf-8")
    return path


@pytest.mark.parametrize("kind", HOSTILE)
def test_a_hostile_config_is_one_clear_config_error_within_a_second(tmp_path, kind):
    body, message = HOSTILE[kind]
    started = time.monotonic()
    with pytest.raises(ConfigError, match=message) as refused:
        api.prepare(config(tmp_path, body), offline=True)
    assert time.monotonic() - started < 1 and refused.value.exit_code == 2
    assert str(config(tmp_path, body)) in str(refused.value) and "\n" not in str(refused.value)


def test_aliases_that_expand_to_a_sane_size_are_read_as_usual():
    text = "base: &base {temperature: 0.2, top_p: 0.9}\nagent: {<<: *base, model: m}\noptimizer: *base\n"
    assert load_yaml(text)["agent"] == {"temperature": 0.2, "top_p": 0.9, "model": "m"}


@pytest.mark.parametrize("kind", ["deep", "recursive"])
def test_a_hostile_set_value_is_one_clear_config_error(kind):
    value = {"deep": "[" * 5000 + "]" * 5000, "recursive": "&a [*a]"}[kind]
    with pytest.raises(ConfigError, match=r"--set agent\.extra_body\.x"):
        parse_overrides([f"agent.extra_body.x={value}"])


@pytest.mark.parametrize("kind", ["billion laughs", "deep"])
def test_a_hostile_sweep_file_is_one_clear_config_error(tmp_path, kind):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(HOSTILE[kind][0] + "runs: [{config: config.yaml}]\n")
    with pytest.raises(ConfigError, match=HOSTILE[kind][1]):
        plan_sweep([sweep], tmp_path / "out", None, [])


def test_a_run_folders_hostile_config_is_one_clear_error(tmp_path):
    run = story_run(tmp_path, evaluated=False)
    (run.path / "config.yaml").write_text(BASE + BILLION_LAUGHS)
    with pytest.raises(UserError, match="aliases expand to more than"):
        RunDir(run.path).experiment()
    with pytest.raises(UserError, match="aliases expand to more than"):
        api.resume(run.path, offline=True)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["validate", "train"])
def test_validate_and_train_exit_2_with_one_line_and_make_no_run_folder(tmp_path, command):
    path = config(tmp_path, BILLION_LAUGHS + "output_dir: runs\n")
    result = subprocess.run([sys.executable, "-c", "from agenttrain.cli import main; main()", command, str(path),
                             "--offline"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "aliases expand to more than" in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow  # PyYAML reads the 100,000 values past the limit in seconds
def test_a_config_that_writes_many_values_out_is_read_only_aliases_are_limited(tmp_path):
    # an inline task's examples (agenttrain.train(task=[...])) sit in config.yaml: eval and resume read them back
    examples = [{"question": f"What is {i} plus 1?", "answer": str(i + 1)} for i in range(MAX_YAML_VALUES // 4)]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"name": "big", "task": {"name": "inline", "train": examples},
                                    "agent": {"model": "m"}, "optimizer": {"model": "m"}}))
    assert len(load_experiment(path).task.train) == len(examples)
