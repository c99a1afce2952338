"""A config on the embedded model (`llm.base_url: local`) that leaves the models and their settings out gets what
fits that model: its own name, a price of $0, and settings that fit its 4096-token context; a setting that cannot
fit is refused in one line before any request."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from agenttrain.cli import app
from agenttrain.config import EMBEDDED_MODEL, ConfigError, load_experiment
from agenttrain.names import ENV_MODEL
from tests.support.files import REPO, write_problems

runner = CliRunner()


def local_config(tmp_path: Path, **sections: object) -> Path:
    data = write_problems(tmp_path / "problems.jsonl", [("What is 2 times 3?", "6"), ("What is 4 times 5?", "20")])
    config = {"name": "local", "task": {"name": "math", "path": str(data), "train_size": 1, "test_size": 1},
              "llm": {"base_url": "local"}, **sections}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_roles_on_the_embedded_model_are_named_after_it_and_cost_nothing(tmp_path):
    experiment = load_experiment(local_config(tmp_path))
    assert experiment.agent.model == experiment.optimizer.model == EMBEDDED_MODEL
    assert experiment.prices()[EMBEDDED_MODEL].cost(1_000_000, 1_000_000) == 0


def test_the_embedded_model_gets_settings_that_fit_its_context_where_the_config_is_silent(tmp_path):
    experiment = load_experiment(local_config(tmp_path, optimizer={"epochs": 5}))
    agent, optimizer = experiment.agent, experiment.optimizer
    assert (agent.max_turns, agent.max_tokens) == (4, 256)
    assert (optimizer.max_tokens, optimizer.max_prompt_tokens, optimizer.max_actions) == (512, 4096 - 512, 1)
    assert optimizer.epochs == 5  # what the config says is kept


def test_a_model_named_in_the_config_or_the_environment_is_kept_and_still_costs_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_MODEL, "qwen-local")
    experiment = load_experiment(local_config(tmp_path, optimizer={"model": "gpt-4o"}))
    assert (experiment.agent.model, experiment.optimizer.model) == ("qwen-local", "gpt-4o")
    assert experiment.prices()["gpt-4o"].cost(1000, 1000) == 0  # served by the embedded model, whatever its name


def test_a_role_on_another_endpoint_keeps_the_api_defaults(tmp_path):
    experiment = load_experiment(local_config(tmp_path, optimizer={"llm": {"base_url": "http://localhost:8000/v1"}}))
    assert experiment.agent.model == EMBEDDED_MODEL
    assert (experiment.optimizer.model, experiment.optimizer.epochs, experiment.optimizer.max_tokens) == \
        ("gpt-4o", 10, 2048)
    assert "gpt-4o" not in experiment.prices()


def test_a_reply_limit_that_leaves_no_room_for_the_prompt_is_refused_naming_both_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"optimizer.max_tokens=3000 leaves 1096 of the embedded model's "
                                          r"4096-token context \(llm.local.context_size\)"):
        load_experiment(local_config(tmp_path), ["optimizer.max_tokens=3000"])
    with pytest.raises(ConfigError, match=r"agent\.max_tokens=1024 leaves 0 of the embedded model's 1024-token"):
        load_experiment(local_config(tmp_path, llm={"base_url": "local", "local": {"context_size": 1024}}),
                        ["agent.max_tokens=1024"])


@pytest.mark.slow
def test_the_dry_run_of_a_local_config_costs_nothing(tmp_path):
    result = runner.invoke(app, ["train", str(local_config(tmp_path)), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    assert '"model": "smollm2-135m-instruct"' in result.output and '"cost_usd": 0.0' in result.output


def test_the_shipped_own_task_configs_validate(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    for name in ("own-task-local", "own-task-api"):
        experiment = load_experiment(REPO / "configs" / f"{name}.yaml")
        assert experiment.task.name == "jsonl" and experiment.task.scorer == "numeric"
