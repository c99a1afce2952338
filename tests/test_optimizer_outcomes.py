"""What the optimizer did is said wherever a user looks (the console, `show`, the report, the viewer): each rejected
action with its reason, counted when the reason repeats, what its prompt left out, and "no change proposed" only
when the model itself said TERMINATE."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from agenttrain.cli import app
from agenttrain.readback.history import RunHistory, action_outcome
from agenttrain.readback.reporting import render_markdown
from agenttrain.rundir.records import Action
from tests.support.run_factory import story_run

runner = CliRunner()
TOO_LONG = "the optimizer's prompt does not fit the model's context even when cut to 900 tokens"


def test_only_a_terminate_says_no_change_proposed():
    assert action_outcome([Action(action="terminate", status="terminate")]) == "no change proposed"
    assert action_outcome([]) == "no change proposed"
    assert action_outcome([Action(action="terminate", status="rejected", error=TOO_LONG)]) == f"rejected: {TOO_LONG}"


def test_rejected_actions_are_counted_per_reason():
    actions = [Action(action="add_function", name="f", status="rejected", error="`code` does not parse"),
               Action(action="add_function", name="g", status="rejected", error="`code` does not parse"),
               Action(action="revise_function", name="h", status="rejected", error="no function named 'h'"),
               Action(action="add_function", name="k")]
    assert action_outcome(actions) == ("4 actions proposed, 1 applied; rejected: `code` does not parse (x2); "
                                       "no function named 'h'")


@pytest.mark.slow
def test_show_lists_every_optimizer_step_with_its_rejections_and_prompt_cuts(tmp_path):
    run = story_run(tmp_path)
    result = runner.invoke(app, ["show", str(run.path)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "epoch 2 optimizer: 3 actions proposed, 2 applied; rejected: no function named 'cube'" in result.output
    assert "epoch 3 optimizer: 1 action proposed, 1 applied; prompt cut to fit: 2 of 4 conversations left out" \
        in result.output
    assert "epoch 4 optimizer: no change proposed" in result.output
    assert "epoch 0 optimizer" not in result.output  # the baseline has no optimizer step


@pytest.mark.slow
def test_the_report_has_a_row_per_optimizer_step(tmp_path):
    report = render_markdown(RunHistory(story_run(tmp_path)), images={})
    steps = report.split("## Optimizer steps", 1)[1].split("\n## ", 1)[0]
    assert "| 2 | rolled back | 3 actions proposed, 2 applied; rejected: no function named 'cube' | – |" in steps
    assert "| 3 | accepted | 1 action proposed, 1 applied | 2 of 4 conversations left out |" in steps
    assert "| 4 | unchanged | no change proposed | – |" in steps
