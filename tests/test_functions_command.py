"""`agenttrain functions`: what each learned function of an epoch did in training, and where it came from."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from agenttrain import api
from agenttrain.cli import app
from tests.support.run_factory import story_run

runner = CliRunner()


def functions_json(*args: str) -> dict:
    result = runner.invoke(app, ["functions", *args, "--json"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads(result.stdout)


def test_each_function_of_the_best_epoch_shows_its_calls_tasks_origin_and_flips(tmp_path):
    report = functions_json(str(story_run(tmp_path).path))
    assert report["epoch"] == 3
    multiply, divide = report["functions"]
    assert (multiply["name"], multiply["calls"], multiply["tasks"], multiply["right"]) == ("multiply", 2, ["t1", "t2"],
                                                                                         2)
    # epoch 2's revision of multiply was rolled back: the kept function is epoch 1's, never revised
    assert (multiply["appeared"], [r["epoch"] for r in multiply["revisions"]]) == (1, [1])
    assert (divide["appeared"], divide["tasks"], divide["right"]) == (3, ["t3", "t4"], 1)
    assert (divide["fixed"], divide["broken"]) == (["t3"], [])  # against epoch 1, the kept set it was judged against


def test_a_rolled_back_epoch_shows_the_revision_it_tried(tmp_path):
    multiply, square = functions_json(str(story_run(tmp_path).path), "--epoch", "2")["functions"]
    assert [r["epoch"] for r in multiply["revisions"]] == [1, 2]
    assert (multiply["broken"], square["appeared"]) == (["t2"], 2)


def test_the_table_names_every_function_and_show_json_carries_the_same_numbers(tmp_path):
    run = story_run(tmp_path)
    table = runner.invoke(app, ["functions", str(run.path)]).stdout
    assert "multiply" in table and "divide" in table and "added" in table
    shown = json.loads(runner.invoke(app, ["show", str(run.path), "--json"]).stdout)
    assert shown["functions"] == [r.to_json() for r in api.describe_functions(run.path)[1]]


def test_an_epoch_without_functions_says_so(tmp_path):
    result = runner.invoke(app, ["functions", str(story_run(tmp_path).path), "--epoch", "0"])
    assert result.exit_code == 0 and "epoch 0 has no functions" in result.stdout
