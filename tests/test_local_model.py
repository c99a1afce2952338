"""`llm.base_url: local` settings: checked before a run directory exists, with one clear error line."""

from __future__ import annotations

import pytest

from agenttrain import api
from agenttrain.errors import UserError
from tests.support.files import write_problems

PRODUCTS = [("What is 6 times 7?", "42"), ("What is 5 times 8?", "40"), ("What is 3 times 9?", "27")]


def test_a_model_path_that_is_not_a_file_is_refused_before_the_run_starts(write_config, tmp_path):
    data = write_problems(tmp_path / "problems.jsonl", PRODUCTS)
    config = write_config("local", data, llm={"local": {"model_path": "models/missing.gguf"}})
    with pytest.raises(UserError, match=r"llm\.local\.model_path: .*missing\.gguf is not a file"):
        api.train(config)
    assert not (tmp_path / "runs").exists()


def test_local_settings_are_validated_with_the_key_named(write_config, tmp_path):
    data = write_problems(tmp_path / "problems.jsonl", PRODUCTS)
    config = write_config("local", data)
    with pytest.raises(UserError, match=r"llm\.local\.threads"):
        api.train(config, ["llm.local.threads=0"])
