"""A GAIA-format task end to end: the attachment reaches the sandbox, the answer is scored by question_scorer."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from agenttrain import api
from agenttrain.config import ConfigError
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.scripted import is_optimizer

# Made-up records in GAIA's metadata.jsonl format (GAIA's own questions must not be re-shared).
RECORDS = [
    {"task_id": f"00000000-0000-0000-0000-00000000000{n}", "Question": f"What is the total of the numbers in the "
     f"attached file? ({n})", "Level": 1, "Final answer": str(total), "file_name": f"numbers-{n}.csv",
     "Annotator Metadata": {"Steps": "1. Read the file. 2. Add.", "Tools": "Python"}}
    for n, total in ((1, 6), (2, 15), (3, 24))
]
CONTENTS = {"numbers-1.csv": "1\n2\n3\n", "numbers-2.csv": "4\n5\n6\n", "numbers-3.csv": "7\n8\n9\n"}


def gaia_folder(tmp_path: Path) -> Path:
    split = tmp_path / "gaia" / "2023" / "validation"
    split.mkdir(parents=True)
    (split / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    for name, text in CONTENTS.items():
        (split / name).write_text(text)
    return tmp_path / "gaia"


def reading_agent(body):
    """Reads the attachment named in the question from its working directory, then answers from the output."""
    last = body["messages"][-1]
    if len(body["messages"]) > 2 and last["role"] == "user":
        return Reply(content=f"FINAL ANSWER: {last['content'].strip().splitlines()[-1]}")
    name = re.search(r"numbers-\d\.csv", body["messages"][1]["content"]).group(0)
    return Reply(content=f"```python\nprint(sum(int(x) for x in open('{name}').read().split()))\n```")


@pytest.mark.slow
def test_gaia_attachments_are_in_the_working_directory_and_answers_are_scored(write_config, tmp_path):
    with FakeOpenAI(lambda body: "TERMINATE" if is_optimizer(body) else reading_agent(body)) as server:
        config = write_config(server.base_url, gaia_folder(tmp_path), task={"name": "gaia", "train_size": 3,
                                                                            "test_size": 0},
                              sandbox={"network": True}, optimizer={"epochs": 0})
        run = api.train(config).run
    records = run.snapshot(0).rollouts()
    assert [r.correct for r in records] == [True, True, True], [r.messages[-2:] for r in records]
    assert run.info().task_requires_network is True
    assert run.info().sandbox["network"]["allowed"] is True


def test_gaia_refuses_to_run_without_network_access(write_config, tmp_path):
    config = write_config("http://127.0.0.1:9/v1", gaia_folder(tmp_path), task={"name": "gaia"})
    with pytest.raises(ConfigError, match=r"sandbox\.network: true"):
        api.train(config)
