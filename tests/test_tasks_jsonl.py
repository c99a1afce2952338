"""A user's own JSONL tasks: sizes that fit their data unless they give some, and errors naming key and file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from agenttrain import api
from agenttrain.config import TaskConfig, load_experiment
from agenttrain.tasks import load_task
from agenttrain.tasks.base import DataError
from agenttrain.tasks.jsonl import JsonlConfig


def rows(path: Path, count: int, start: int = 0) -> Path:
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": f"{i}+1?", "answer": str(i + 1)}) + "\n"
                            for i in range(start, start + count)))
    return path


def test_the_readme_custom_task_form_splits_one_file_by_the_stated_rule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    rows(tmp_path / "all.jsonl", 24)
    config = tmp_path / "mine.yaml"
    config.write_text("name: mine\ntask: {name: jsonl, path: all.jsonl, question_field: question, "
                      "answer_field: answer, scorer: exact}\n")
    experiment = api.prepare(config, offline=True)
    splits = load_task(experiment.task).splits()
    assert (len(splits.train), len(splits.test)) == (19, 5)  # 20% held out for test, the rest trains
    assert not {e.id for e in splits.train} & {e.id for e in splits.test}
    assert api.split_sizes(experiment) == ("19 train, 5 test examples (no sizes set: 20% of all.jsonl held out "
                                           "for test, the rest for training)")


def test_separate_train_and_test_files_use_every_row_unless_a_size_is_given(tmp_path):
    train, test = rows(tmp_path / "train.jsonl", 30), rows(tmp_path / "test.jsonl", 7, start=100)
    splits = load_task(JsonlConfig(name="jsonl", train_path=train, test_path=test)).splits()
    assert (len(splits.train), len(splits.test)) == (30, 7)
    sized = load_task(JsonlConfig(name="jsonl", train_path=train, test_path=test, train_size=10)).splits()
    assert (len(sized.train), len(sized.test)) == (10, 7)


def test_paper_tasks_keep_the_paper_sizes(tmp_path):
    config = TaskConfig(name="math", path=tmp_path / "x.jsonl")
    assert (config.train_size, config.test_size) == (20, 80)


@pytest.mark.parametrize("sizes", [{"train_size": 40}, {"train_size": 10, "test_size": 30}])
def test_a_size_that_does_not_fit_names_the_key_and_the_file(tmp_path, sizes):
    data = rows(tmp_path / "all.jsonl", 24)
    with pytest.raises(DataError) as caught:
        load_task(JsonlConfig(name="jsonl", path=data, **sizes)).splits()
    message = str(caught.value)
    assert message.startswith(f"{data}: task.train_size={sizes['train_size']}") and "only 24 match" in message


def test_a_train_file_too_small_for_its_size_is_named(tmp_path):
    train, test = rows(tmp_path / "train.jsonl", 5), rows(tmp_path / "test.jsonl", 5, start=100)
    with pytest.raises(DataError, match=rf"^{train}: task\.train_size=8 asks for 8 examples, but only 5"):
        load_task(JsonlConfig(name="jsonl", train_path=train, test_path=test, train_size=8)).splits()


def test_limit_keeps_the_first_n_of_each_split(tmp_path):
    data = rows(tmp_path / "all.jsonl", 24)
    full = load_task(JsonlConfig(name="jsonl", path=data)).splits()
    limited = load_task(JsonlConfig(name="jsonl", path=data, limit=3)).splits()
    assert limited.train == full.train[:3] and limited.test == full.test[:3]


def test_limit_does_not_change_the_hash_of_runs_that_never_set_it(tmp_path):
    config = tmp_path / "exp.yaml"
    rows(tmp_path / "all.jsonl", 4)
    config.write_text(yaml.safe_dump({"name": "x", "task": {"name": "jsonl", "path": "all.jsonl"}}))
    unset, limited = load_experiment(config), load_experiment(config, ["task.limit=2"])
    assert "limit" not in json.dumps(unset.model_dump(mode="json", exclude={"task"}))
    assert unset.content_hash() != limited.content_hash()
    assert unset.content_hash() == load_experiment(config, ["task.limit=null"]).content_hash()
