"""Config loading: overrides, defaults, and errors that name the key and the file before any work starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agenttrain.config import ConfigError, check_api_keys, load_experiment, parse_overrides
from tests.support.files import REPO


def write(tmp_path: Path, data: dict) -> Path:
    (tmp_path / "data.jsonl").write_text('{"problem": "1+1?", "answer": "2"}\n')
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def minimal(**extra) -> dict:
    return {"name": "exp", "task": {"name": "math", "path": "data.jsonl"}, **extra}


def test_defaults_follow_the_paper(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    experiment = load_experiment(write(tmp_path, minimal()))
    optimizer = experiment.optimizer
    assert (optimizer.epochs, optimizer.max_actions, optimizer.early_stop) == (10, 3, 10)
    assert experiment.agent.max_turns == 15 and experiment.optimizer.roll_back
    assert experiment.task.path == tmp_path / "data.jsonl"  # stored absolute, so runs work from anywhere


def test_set_overrides_any_key_with_yaml_typed_values(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    experiment = load_experiment(
        write(tmp_path, minimal()), ["optimizer.epochs=3", "task.types=[Algebra, Geometry]", "llm.base_url=http://x/v1"]
    )
    assert experiment.optimizer.epochs == 3
    assert experiment.task.types == ["Algebra", "Geometry"]
    assert experiment.llm.base_url == "http://x/v1"


@pytest.mark.parametrize(
    ("data", "overrides", "expected"),
    [
        (minimal(optimiser={"epochs": 2}), [], "optimiser: unknown key"),
        (minimal(), ["optimizer.epochs=many"], "optimizer.epochs"),
        (minimal(), ["optimizer.epochz=2"], "optimizer.epochz: unknown key"),
        (minimal(), ["agent.type=planner"], "agent.type: unknown agent 'planner'; registered: assistant"),
        (minimal(), ["task.name=trivia"], "task: unknown task 'trivia'; registered: gaia, inline, jsonl, math"),
        (minimal(), ["task.question_field=prompt"], "task.question_field: unknown key"),
        (minimal(), ["task.name=jsonl", "task.scorer=fuzzy"], "task.scorer: unknown scorer 'fuzzy'"),
        ({"name": "exp", "task": {"name": "math", "path": "missing.jsonl"}}, [], "task.path"),
        ({"name": "exp", "task": {"name": "math"}}, [], "task.path"),
        (minimal(name="has space"), [], "name"),
        (minimal(), ["epochs"], "KEY=VALUE"),
        # numbers the OS or the clock cannot take: refused here, not as a crash (or silent no-op) mid-run
        (minimal(), ["sandbox.timeout_s=1.0e10"], "sandbox.timeout_s: Input should be less than or equal to 86400"),
        (minimal(), ["sandbox.timeout_s=.inf"], "sandbox.timeout_s: Input should be a finite number"),
        (minimal(), ["llm.timeout_s=.nan"], "llm.timeout_s: Input should be a finite number"),
        (minimal(), ["sandbox.memory_mb=1.0e+14"], "sandbox.memory_mb: Input should be less than or equal to"),
        (minimal(), ["optimizer.epochs=1000000"], "optimizer.epochs: Input should be less than or equal to 1000"),
        (minimal(), ["task.train_size=1.0e+12"], "task.train_size: Input should be less than or equal to"),
        (minimal(), ["budget.max_usd=1.0e+300"], "budget.max_usd: Input should be less than or equal to"),
        (minimal(), ["llm.max_outage_s=-1"], "llm.max_outage_s: Input should be greater than or equal to 0"),
        (minimal(), ["llm.base_url=http://localhost:99999/v1"], "llm.base_url: "
         "'http://localhost:99999/v1': Port out of range 0-65535"),
        (minimal(), ["llm.base_url=http://localhost:0/v1"], "llm.base_url: "
         "'http://localhost:0/v1': port 0 cannot be connected to"),
        (minimal(), ["optimizer.llm.base_url=localhost:8000"], "optimizer.llm.base_url: "
         "'localhost:8000': expected an http(s) URL such as http://localhost:8000/v1"),
        (minimal(output_dir="exp.yaml"), [], "output_dir: "),
        (minimal(output_dir="exp.yaml/runs"), [], "output_dir: "),
    ],
)
def test_bad_configs_name_the_key_and_the_file(tmp_path, monkeypatch, data, overrides, expected):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as error:
        load_experiment(path, overrides)
    assert expected in str(error.value)
    if "KEY=VALUE" not in expected:
        assert str(path) in str(error.value)


def test_unreadable_yaml_and_missing_file(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_experiment(broken)
    (tmp_path / "latin1.yaml").write_bytes(b"\xff\xfe name: x")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_experiment(tmp_path / "latin1.yaml")
    with pytest.raises(ConfigError, match="is a folder"):
        load_experiment(tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        load_experiment(tmp_path / "nope.yaml")


def test_an_output_dir_that_is_a_file_or_below_one_names_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, minimal(output_dir="exp.yaml/runs"))
    with pytest.raises(ConfigError, match=f"output_dir: {tmp_path / 'exp.yaml'} is a file, not a folder"):
        load_experiment(path)


def test_a_jsonl_task_may_give_train_and_test_files_instead_of_one_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("train", "test"):
        (tmp_path / f"{name}.jsonl").write_text(f'{{"question": "q", "answer": "1", "id": "{name}"}}\n')
    path = write(tmp_path, {"name": "exp", "task": {"name": "jsonl", "train_path": "train.jsonl",
                                                    "test_path": "test.jsonl"}})
    assert load_experiment(path).task.train_path == tmp_path / "train.jsonl"


def test_a_key_given_twice_is_refused_with_its_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.jsonl").write_text('{"problem": "1+1?", "answer": "2"}\n')
    path = tmp_path / "exp.yaml"
    path.write_text("name: exp\ntask: {name: math, path: data.jsonl}\noptimizer:\n  epochs: 3\n  epochs: 30\n")
    with pytest.raises(ConfigError, match=rf"^{path}:5: key 'epochs' is given twice; keep one of them$"):
        load_experiment(path)


def test_missing_api_key_is_reported_for_openai_but_not_for_a_local_endpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    experiment = load_experiment(write(tmp_path, minimal()))
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        check_api_keys(experiment, "exp.yaml")
    local = load_experiment(write(tmp_path, minimal()), ["llm.base_url=http://127.0.0.1:8000/v1"])
    check_api_keys(local, "exp.yaml")


def test_a_bad_openai_base_url_variable_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:99999/v1")
    experiment = load_experiment(write(tmp_path, minimal()))
    with pytest.raises(ConfigError, match=r"^\$OPENAI_BASE_URL: 'http://127.0.0.1:99999/v1': Port out of range"):
        check_api_keys(experiment, "exp.yaml")


def test_role_overrides_inherit_the_rest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    experiment = load_experiment(
        write(tmp_path, minimal(llm={"concurrency": 4}, optimizer={"llm": {"base_url": "http://opt/v1"}}))
    )
    assert experiment.llm_for("optimizer").base_url == "http://opt/v1"
    assert experiment.llm_for("optimizer").concurrency == 4
    assert experiment.llm_for("agent").base_url is None


def test_content_hash_ignores_output_location_but_not_the_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, minimal())
    base = load_experiment(path).content_hash()
    assert load_experiment(path, ["output_dir=elsewhere"]).content_hash() == base
    assert load_experiment(path, ["agent.model=other"]).content_hash() != base


def test_parse_overrides_nests_keys():
    assert parse_overrides(["a.b.c=1", "a.d=x"]) == {"a": {"b": {"c": 1}, "d": "x"}}


@pytest.mark.parametrize("config", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(config, monkeypatch):
    monkeypatch.chdir(REPO)
    data = yaml.safe_load(config.read_text())
    from agenttrain.config import Experiment

    Experiment.model_validate(data)


def test_keys_at_their_defaults_leave_the_config_hash_alone(tmp_path, monkeypatch):
    """A key added by a later version (optimizer.method, sandbox.disk_mb, ...) must not make recorded runs refuse
    --resume: only keys set to something other than their default enter the hash."""
    monkeypatch.chdir(tmp_path)
    from agenttrain.config import Experiment

    base = {"name": "x", "task": {"name": "math", "path": "/tmp/p.jsonl"}}
    experiment = Experiment.model_validate(base)
    assert experiment.content_hash() == "a5ab5c953242fd3e"  # pinned: a change here breaks every recorded run
    spelled_out = Experiment.model_validate(
        {**base, "optimizer": {"mode": "progressive", "method": "agent_optimizer"}, "sandbox": {"disk_mb": 512}})
    assert spelled_out.content_hash() == experiment.content_hash()
    hashes = {key: Experiment.model_validate({**base, "optimizer": change}).content_hash()
              for key, change in (("mode", {"mode": "all_at_once"}), ("method", {"method": "all_at_once"}),
                                  ("tool_creation", {"method": "tool_creation"}))}
    # a run recorded with `mode: all_at_once` keeps its hash under today's `method: all_at_once`
    assert hashes["mode"] == hashes["method"] != experiment.content_hash()
    assert hashes["tool_creation"] not in (hashes["mode"], experiment.content_hash())


def test_a_task_section_in_the_old_flat_layout_is_still_valid(tmp_path, monkeypatch):
    """Configs saved before tasks owned their keys held every task's keys, at their defaults."""
    monkeypatch.chdir(tmp_path)
    flat = {"name": "math", "path": "data.jsonl", "train_path": None, "test_path": None, "val_path": None,
            "types": ["Algebra"], "levels": None, "ques_types": None, "grades": None, "gaia_split": "validation",
            "question_field": "question", "answer_field": "answer", "id_field": "id", "scorer": None}
    experiment = load_experiment(write(tmp_path, minimal(task=flat)))
    assert experiment.task.model_dump(mode="json", exclude={"path"}) == {
        "name": "math", "train_size": 20, "test_size": 80, "val_size": 0, "seed": 0, "types": ["Algebra"],
        "levels": None, "limit": None}


# -- paths, environment defaults, and a user's own data --------------------------------------------------------


def test_paths_in_a_config_are_relative_to_its_folder_and_set_paths_to_the_shell(tmp_path, monkeypatch):
    config = write(tmp_path, minimal(output_dir="out"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "other.jsonl").write_text('{"problem": "1+1?", "answer": "2"}\n')
    monkeypatch.chdir(elsewhere)
    experiment = load_experiment(config)
    assert experiment.task.path == tmp_path / "data.jsonl"
    assert experiment.output_dir == tmp_path / "out"
    overridden = load_experiment(config, ["task.path=other.jsonl"])
    assert overridden.task.path == elsewhere / "other.jsonl"
    assert load_experiment(write(tmp_path, minimal())).output_dir == elsewhere / "runs"  # unset: the shell's


def test_the_quickstart_config_loads_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    experiment = load_experiment(REPO / "configs" / "quickstart.yaml")
    assert experiment.task.path == REPO / "data" / "math-sample.jsonl"


def test_environment_defaults_fill_what_the_config_leaves_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENTTRAIN_MODEL", "llama-3-8b")
    monkeypatch.setenv("AGENTTRAIN_OPTIMIZER_MODEL", "llama-3-70b")
    monkeypatch.setenv("AGENTTRAIN_OUTPUT_DIR", str(tmp_path / "all-runs"))
    monkeypatch.setenv("AGENTTRAIN_BASE_URL", "http://127.0.0.1:8000/v1")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9999/v1")
    experiment = load_experiment(write(tmp_path, minimal()))
    assert (experiment.agent.model, experiment.optimizer.model) == ("llama-3-8b", "llama-3-70b")
    assert experiment.output_dir == tmp_path / "all-runs"
    assert experiment.llm.resolved_base_url() == "http://127.0.0.1:8000/v1"
    own = load_experiment(write(tmp_path, minimal(agent={"model": "gpt-4o-mini"}, llm={"base_url": "http://x/v1"})))
    assert own.agent.model == "gpt-4o-mini" and own.llm.resolved_base_url() == "http://x/v1"  # the config wins


def test_a_missing_paper_data_file_says_how_to_download_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "task": {"name": "math", "path": "data/math/test.jsonl"}}))
    with pytest.raises(ConfigError, match=r"task\.path: .*data/math/test\.jsonl does not exist; download it with: "
                                          r"agenttrain data pull math"):
        load_experiment(path)


def test_validation_errors_are_listed_one_per_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_experiment(write(tmp_path, minimal(optimizer={"epochz": 1, "max_actions": 0})))
    assert sorted(caught.value.errors) == ["optimizer.epochz: unknown key; did you mean `epochs`?",
                                           "optimizer.max_actions: Input should be greater than or equal to 1 (got 0)"]


def test_an_optimizer_method_is_a_registered_name_and_old_mode_settings_still_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from agenttrain.config import Experiment

    base = {"name": "x", "task": {"name": "math", "path": "/tmp/p.jsonl"}}
    old = {"mode": "all_at_once", "method": "agent_optimizer"}  # as config.yaml of earlier runs spells it
    assert Experiment.model_validate({**base, "optimizer": old}).optimizer.method == "all_at_once"
    assert Experiment.model_validate({**base, "optimizer": {"method": "agent_optimizer"}}).optimizer.method == \
        "progressive"
    with pytest.raises(ConfigError, match=r"optimizer.method: unknown optimizer method 'serch'; did you mean "
                                          r"'search'\? registered: all_at_once, .*progressive, .*tool_creation"):
        load_experiment(write(tmp_path, minimal(optimizer={"method": "serch"})))


@pytest.mark.parametrize(("data", "expected"), [
    (minimal(optimiser={"epochs": 2}), "optimiser: unknown key; did you mean `optimizer`?"),
    (minimal(optimizer={"max_actoins": 2}), "optimizer.max_actoins: unknown key; did you mean `max_actions`?"),
    (minimal(agent={"llm": {"base_ur": "http://x/v1"}}), "agent.llm.base_ur: unknown key; did you mean `base_url`?"),
    ({"name": "exp", "task": {"name": "math", "path": "data.jsonl", "typse": ["Algebra"]}},
     "task.typse: unknown key; did you mean `types`?"),  # the keys of the task the config names
    (minimal(optimizer={"zzz": 1}), "optimizer.zzz: unknown key (check the spelling)"),
])
def test_an_unknown_key_names_the_closest_known_one(tmp_path, monkeypatch, data, expected):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_experiment(write(tmp_path, data))
    assert expected in str(caught.value)


def test_a_value_of_the_wrong_type_is_quoted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_experiment(write(tmp_path, minimal(optimizer={"epochs": "many", "max_tokens": [1]})))
    assert "optimizer.epochs: Input should be a valid integer, unable to parse string as an integer (got 'many')" \
        in str(caught.value)
    assert "optimizer.max_tokens: Input should be a valid integer (got [1])" in str(caught.value)


def test_broken_yaml_names_the_file_line_and_column(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: exp\ntask: {name: math, path: [data.jsonl\n")
    with pytest.raises(ConfigError) as caught:
        load_experiment(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: not valid YAML, line 3, column 1: ")
    assert "<unicode string>" not in message


def test_a_set_value_that_is_not_yaml_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"--set 'task.types=\[Algebra': the value is not valid YAML"):
        parse_overrides(["task.types=[Algebra"])
