"""`agenttrain report`: what training learned, read back from a run directory built without an LLM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agenttrain.cli import app
from agenttrain.errors import UserError
from agenttrain.functions import Function
from agenttrain.readback.complexity import cyclomatic_complexity
from agenttrain.readback.history import CallCount, LineageEvent, RunHistory
from agenttrain.readback.reporting import render_markdown, write_report
from agenttrain.rundir.directory import RunDir
from agenttrain.rundir.records import Best
from agenttrain.stats import paired_difference_ci
from tests.support.run_factory import MULTIPLY, experiment, rollout, save_epoch, save_eval, story_run

runner = CliRunner()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def table_rows(markdown: str, header: str) -> list[list[str]]:
    """The cells of the markdown table whose header row is `header`."""
    lines = markdown.splitlines()
    start = lines.index(header)
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


# -- cyclomatic complexity ----------------------------------------------------------------------------------


def test_straight_line_code_has_complexity_one():
    assert cyclomatic_complexity("def f(x):\n    y = x + 1\n    return y\n") == 1


def test_every_decision_point_counts_once():
    code = """
def f(xs, y):
    total = 0
    for x in xs:                       # 1
        if x > 0 and y:                # 2 (the if, the `and`)
            total += x
        elif x < 0:                    # 1
            total -= x
    try:
        return [t for t in xs if t]    # 2 (the comprehension's for and its if)
    except ValueError:                 # 1
        return total if y else 0       # 1
"""
    assert cyclomatic_complexity(code) == 1 + 8


def test_match_cases_and_while_loops_count():
    code = "def f(x):\n    while x:\n        x -= 1\n    match x:\n        case 0: return 'a'\n" \
           "        case 1: return 'b'\n        case _: return 'c'\n"
    assert cyclomatic_complexity(code) == 1 + 1 + 3


def test_unparsable_code_raises_syntax_error():
    with pytest.raises(SyntaxError):
        cyclomatic_complexity("def f(:\n")


# -- what the history derives from the run ------------------------------------------------------------------


def test_history_reads_lineage_usage_complexity_and_stuck_tasks(tmp_path):
    history = RunHistory(story_run(tmp_path))
    assert history.lineage == [
        LineageEvent(1, "accepted", "added", "multiply", "products recur in these problems"),
        LineageEvent(2, "rolled_back", "revised", "multiply", "simplify"),
        LineageEvent(2, "rolled_back", "added", "square", None),  # the rejected removal is not a change
        LineageEvent(3, "accepted", "added", "divide", "t3 divides | and fails without it"),
    ]
    multiply_calls = {1: CallCount(4, 3), 2: CallCount(1, 1), 3: CallCount(2, 2), 4: CallCount(2, 2)}
    assert history.function_usage["multiply"] == multiply_calls
    assert history.function_usage["mutliply"] == {1: CallCount(1, 0)}  # a name the agent invented
    assert history.complexity["divide"] == {3: 2, 4: 2} and history.complexity["multiply"] == {1: 1, 2: 1, 3: 1, 4: 1}
    assert [r.id for r in history.always_wrong] == ["t4"]
    [(evaluation, comparison)] = history.comparisons_with_baseline()
    assert (evaluation.split, evaluation.epoch) == ("test", 3)
    assert (comparison.paired, comparison.fixed, comparison.broken) == (10, 5, 0)
    assert comparison.p_value == pytest.approx(0.0625)


def test_a_transfer_eval_is_its_own_series(tmp_path):
    run = story_run(tmp_path)
    save_eval(run, "test", 3, {"x": True}, prefix="transfer-geometry-")
    history = RunHistory(run)
    assert history.eval_splits == ["test", "transfer-geometry-test"]
    assert history.evaluation("test", 3).accuracy == 0.8


# -- the written report -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_report_writes_markdown_and_four_plots(tmp_path):
    run = story_run(tmp_path)
    paths = write_report(run)
    assert paths[0] == run.path / "report" / "report.md"
    assert sorted(p.name for p in paths[1:]) == ["complexity.png", "function_usage.png", "learning_curve.png",
                                                 "spend.png"]
    for plot in paths[1:]:
        assert plot.read_bytes().startswith(PNG_SIGNATURE)
    markdown = paths[0].read_text()
    for plot in paths[1:]:
        assert f"]({plot.name})" in markdown  # linked relative to report.md


@pytest.mark.slow
def test_report_tables_tell_the_story(tmp_path):
    markdown = write_report(story_run(tmp_path))[0].read_text()
    epochs = table_rows(markdown, "| epoch | outcome | train | test | functions | actions applied | tokens | cost $ |")
    assert [row[:4] for row in epochs] == [
        ["0", "baseline", "25.0%", "30.0%"],
        ["1", "accepted", "50.0%", "–"],
        ["2", "rolled back", "25.0%", "–"],
        ["3 (best)", "accepted", "75.0%", "80.0%"],
        ["4", "unchanged", "75.0%", "–"],
    ]
    comparisons = table_rows(markdown, "| split | epoch | tasks paired | difference | 95% CI (paired bootstrap) "
                                       "| fixed | broken | p-value |")
    low, high = paired_difference_ci([(i < 3, i < 8) for i in range(10)])
    assert comparisons == [["test", "3", "10", "+50.0 pt", f"{100 * low:+.1f} pt – {100 * high:+.1f} pt", "5", "0",
                            "0.0625"]]
    lineage = table_rows(markdown, "| epoch | epoch outcome | change | function | optimizer's reason |")
    assert lineage[3] == ["3", "accepted", "added", "`divide`", "t3 divides \\| and fails without it"]
    usage_header = "| function | epoch 0 | epoch 1 | epoch 2 | epoch 3 | epoch 4 | total |"
    usage = {row[0]: row[1:] for row in table_rows(markdown, usage_header)}
    assert usage["`multiply`"] == ["–", "3/4", "1/1", "2/2", "2/2", "8/9"]
    stuck = table_rows(markdown, "| task | question | gold | last answer |")
    assert stuck == [["`t4`", "Question of t4?", "`gold-t4`", "`answer-t4`"]]
    assert "$15.0000 training + $0.7500 evaluation" in markdown


@pytest.mark.slow
def test_report_without_functions_or_evals_still_renders(tmp_path):
    run = RunDir.create(experiment(tmp_path))
    save_epoch(run, 0, [], "baseline", [rollout("t1", False), rollout("t2", True)], 0.5)
    paths = write_report(run, tmp_path / "out")
    assert [p.name for p in paths] == ["report.md", "learning_curve.png", "spend.png"]
    markdown = paths[0].read_text()
    assert "The agent called no learned function." in markdown
    assert "None yet: run `agenttrain eval" in markdown
    assert "1 of 2 training tasks were wrong in every epoch" in markdown


@pytest.mark.slow
def test_code_that_does_not_parse_is_reported_not_fatal(tmp_path):
    run = RunDir.create(experiment(tmp_path))
    broken = Function("broken", "Hand-edited.", {"type": "object", "properties": {}}, "def broken(:\n")
    save_epoch(run, 0, [broken], "baseline", [rollout("t1", True)], 1.0)
    markdown = write_report(run)[0].read_text()
    assert table_rows(markdown, "| function | epoch 0 |") == [["`broken`", "does not parse"]]


def test_a_run_without_epochs_is_a_user_error(tmp_path):
    run = RunDir.create(experiment(tmp_path))
    with pytest.raises(UserError, match="no epoch has finished yet"):
        write_report(run)


def test_a_damaged_eval_file_is_named(tmp_path):
    run = story_run(tmp_path)
    (run.evals_dir / "val-epoch-1.json").write_text('{"split": "val"}')
    with pytest.raises(UserError, match=r"val-epoch-1\.json: not a valid eval result"):
        write_report(run)


# -- the command --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_report_command_prints_the_paths_as_json(tmp_path):
    run = story_run(tmp_path)
    result = runner.invoke(app, ["report", str(run.path), "--out", str(tmp_path / "custom"), "--json"])
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)
    assert written["report"] == str(tmp_path / "custom" / "report.md")
    assert len(written["plots"]) == 4 and all(Path(p).is_file() for p in written["plots"])


@pytest.mark.slow
def test_report_command_text_and_help(tmp_path):
    run = story_run(tmp_path, evaluated=False)
    result = runner.invoke(app, ["report", str(run.path)])
    assert result.exit_code == 0 and "report.md and 4 plots" in result.stdout
    assert "Example: agenttrain report" in runner.invoke(app, ["report", "--help"]).stdout


def test_an_out_path_that_is_a_file_is_refused(tmp_path):
    run = story_run(tmp_path)
    taken = tmp_path / "notes.md"
    taken.write_text("mine")
    result = runner.invoke(app, ["report", str(run.path), "--out", str(taken)])
    assert isinstance(result.exception, UserError) and "is a file" in str(result.exception)
    assert taken.read_text() == "mine"


# -- what the plots say about themselves ----------------------------------------------------------------------


def png_size_and_title(path: Path) -> tuple[int, str]:
    """Width in pixels (from the IHDR chunk) and the `Title` text chunk of a PNG."""
    data = path.read_bytes()
    chunk = data.index(b"tEXtTitle\x00")
    length = int.from_bytes(data[chunk - 4:chunk], "big") - len(b"Title\x00")
    text_start = chunk + len(b"tEXtTitle\x00")
    return int.from_bytes(data[16:20], "big"), data[text_start:text_start + length].decode("latin-1")


@pytest.mark.slow
def test_each_plot_names_the_run_and_both_models(tmp_path):
    run = story_run(tmp_path)
    for plot in write_report(run)[1:]:
        _, title = png_size_and_title(plot)
        assert title == f"{run.path.name}: agent agent-model, optimizer optimizer-model", plot.name


@pytest.mark.slow
def test_the_cost_panel_is_left_out_when_no_model_has_a_price(tmp_path):
    unpriced = story_run(tmp_path, "unpriced")
    priced = story_run(tmp_path, "priced")
    config = priced.path / "config.yaml"
    config.write_text(config.read_text().replace("prices: {}", "prices: {agent-model: {input: 1, output: 1}}"))
    narrow, _ = png_size_and_title(write_report(unpriced)[0].parent / "spend.png")
    wide, _ = png_size_and_title(write_report(priced)[0].parent / "spend.png")
    assert narrow < wide  # one panel (tokens) instead of two


@pytest.mark.slow
def test_the_complexity_chart_needs_two_values_to_compare(tmp_path):
    run = RunDir.create(experiment(tmp_path))
    save_epoch(run, 0, [], "baseline", [rollout("t1", False)], 0.0)
    save_epoch(run, 1, [MULTIPLY], "accepted", [rollout("t1", True)], 1.0)
    run.set_best(Best(epoch=1, train_accuracy=1.0, reason="highest"))
    names = [p.name for p in write_report(run)[1:]]
    assert "complexity.png" not in names  # one function in one epoch: nothing to compare
    save_epoch(run, 2, [MULTIPLY], "unchanged", [rollout("t1", True)], 1.0)
    assert "complexity.png" in [p.name for p in write_report(run)[1:]]  # the same function in two epochs


@pytest.mark.slow
def test_report_md_is_as_readable_as_its_plots(tmp_path):
    paths = write_report(story_run(tmp_path))
    modes = {p.name: p.stat().st_mode & 0o777 for p in paths}
    assert modes["report.md"] == modes["learning_curve.png"], modes


def test_a_strict_accuracy_in_the_report_says_what_strict_means(tmp_path):
    run = story_run(tmp_path, evaluated=False)
    save_eval(run, "test", 3, {"q1": True, "q2": True}, strict=0.5)
    markdown = render_markdown(RunHistory(run), images={})
    rows = table_rows(markdown, "| split | epoch | accuracy | 95% CI (Wilson) | correct | strict |")
    assert rows[0][-1] == "50.0%"
    assert "Strict: Hendrycks' is_equiv string match alone" in markdown
