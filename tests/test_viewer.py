"""`agenttrain view`: the pages over real run directories, read over HTTP and clicked through in Chromium."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agenttrain import api
from agenttrain.cli import app
from agenttrain.names import STRICT_MEANING
from agenttrain.rundir.directory import RunDir
from agenttrain.rundir.records import FORMAT_VERSION
from agenttrain.viewer.html import segment
from agenttrain.viewer.rollout_index import rollout_index
from agenttrain.viewer.transcript import conversation
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.files import write_problems
from tests.support.run_factory import experiment, rollout, save_epoch, save_eval, story_run, usage
from tests.support.scripted import (
    MULTIPLY,
    TERMINATE,
    add,
    boxed,
    is_optimizer,
    list_b,
    multiplying_agent,
    offered_tools,
    tool_results,
)
from tests.support.viewing import viewer

HOSTILE = "<script>document.title='pwned'</script>"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def page(url: str) -> str:
    status, body = get(url)
    assert status == 200, body
    return body


class _Text(HTMLParser):
    BREAKS = frozenset({"p", "div", "td", "th", "tr", "li", "dt", "dd", "h1", "h2", "h3", "pre", "nav", "summary",
                        "option", "br", "title"})

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self.BREAKS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        self.handle_starttag(tag, [])

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def text_of(html: str) -> str:
    """The page's words as a reader sees them: entities decoded, one space between cells and blocks."""
    parser = _Text()
    parser.feed(html)
    return " ".join("".join(parser.parts).split())


def files_and_times(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


# -- pages over the story run (tests/support/run_factory.py) ----------------------------------------------------


@pytest.fixture
def story(tmp_path: Path) -> RunDir:
    return story_run(tmp_path)


def test_runs_list_shows_each_run_with_task_agent_and_test_interval(tmp_path, story):
    story_run(tmp_path, "other", evaluated=False)
    with viewer(tmp_path / "runs") as url:
        shown = text_of(page(url + "/"))
    assert "2 of 2 runs" in shown
    assert f"{story.path.name} finished math assistant · agent-model 4 75.0% @3 80.0% (49.0% – 94.3%)" in shown
    assert "$15.7500" in shown  # training plus both evaluations


def test_runs_list_shows_a_new_evaluation_of_the_same_epoch(story):
    with viewer(story.path) as url:
        assert "80.0% (49.0% – 94.3%)" in text_of(page(url + "/"))
        save_eval(story, "test", 3, {f"q{i}": True for i in range(12)})  # `agenttrain eval` again, more tasks
        assert "100.0% (75.8% – 100.0%)" in text_of(page(url + "/"))


def test_runs_list_filters_by_name_and_status_and_sorts_by_a_column(tmp_path, story):
    other = story_run(tmp_path, "other", evaluated=False)
    other.update_info(status="failed")
    with viewer(tmp_path / "runs") as url:
        by_name = page(url + "/?q=OTH")
        failed = page(url + "/?status=failed")
        cheapest_first = page(url + "/?sort=cost&order=asc")
    assert other.path.name in by_name and story.path.name not in by_name
    assert other.path.name in failed and story.path.name not in failed
    rows = re.findall(r'data-run="([^"]+)"', cheapest_first)
    assert rows == [other.path.name, story.path.name]  # $15.00 before $15.75


def test_run_page_has_the_curve_epoch_table_evaluations_cost_and_config(story):
    with viewer(story.path.parent) as url:
        html = page(f"{url}/runs/{story.path.name}/")
    shown = text_of(html)
    marks = re.findall(r'<circle[^>]*class="mark (\w+)"', html)
    assert marks == ["baseline", "accepted", "rolled_back", "accepted", "unchanged"]
    assert "epoch 3 ★ best accepted 75.0% 80.0% 2 1" in shown
    assert "epoch 2 rolled back 25.0% – 2 2 3 actions proposed, 2 applied; rejected: no function named 'cube'" \
        in shown
    assert "1 action proposed, 1 applied; prompt cut to fit: 2 of 4 conversations left out" in shown
    assert "epoch 4 unchanged 75.0% – 2 0 no change proposed" in shown
    assert "test 3 80.0% 49.0% – 94.3% 8/10" in shown
    assert "optimizer 40 0 3000 0 1000 $4.0000" in shown and "total 150 0 11250 0 3750 $15.0000" in shown
    assert "of which reasoning" not in shown  # no reasoning model, no reasoning columns
    assert "config.yaml" in shown and "optimizer-model" in shown


def test_strict_accuracy_is_shown_with_what_it_means(tmp_path):
    run = story_run(tmp_path, evaluated=False)
    save_eval(run, "test", 3, {"q1": True, "q2": True}, strict=0.5)
    with viewer(run.path) as url:
        shown = text_of(page(f"{url}/runs/{run.path.name}/"))
        transcript = text_of(page(f"{url}/runs/{run.path.name}/epochs/1/tasks/t1"))
    assert "correct strict cost" in shown and "2/2 50.0%" in shown and STRICT_MEANING in shown
    assert "strict ✓ right (Hendrycks' is_equiv string match alone" in transcript


def test_a_run_that_ended_before_its_first_epoch_does_not_ask_for_a_refresh(tmp_path):
    run = RunDir.create(experiment(tmp_path))
    run.finish("failed", reason="the endpoint refused the key")
    with viewer(run.path) as url:
        shown = text_of(page(f"{url}/runs/{run.path.name}/"))
    assert "No epoch finished: the run ended as failed." in shown and "refresh" not in shown


def test_cost_per_role_shows_reasoning_only_for_reasoning_models(tmp_path):
    run = RunDir.create(experiment(tmp_path))
    spent = usage(1000)
    spent["agent"].update(reasoning_tokens=200, reasoning_cost_usd=0.2, cached_prompt_tokens=300)
    run.finish("finished", usage=spent)
    with viewer(run.path) as url:
        shown = text_of(page(f"{url}/runs/{run.path.name}/"))
    assert "completion tokens of which reasoning cost of which reasoning" in shown
    assert "agent 10 0 750 300 250 200 $1.0000 $0.2000" in shown


def test_epoch_page_lists_functions_actions_and_filters_rollouts(story):
    with viewer(story.path.parent) as url:
        base = f"{url}/runs/{story.path.name}/epochs/2"
        everything = text_of(page(base))
        flipped = page(base + "?filter=flipped")
        wrong = page(base + "?filter=wrong")
    assert "def multiply(a, b): return a + b" in everything and "def square(x)" in everything
    assert "revise_function multiply applied 1 simplify" in everything
    assert "remove_function cube rejected 1 – no function named 'cube'" in everything
    assert "3 actions proposed, 2 applied; rejected: no function named 'cube'" in everything  # the step in a line
    # epoch 1 had t1 and t2 right; the rolled-back set kept t1 and broke t2
    flipped, wrong = (html.split("<h2>Rollouts</h2>")[1] for html in (flipped, wrong))
    assert re.findall(r'tasks/(t\d)"', flipped) == ["t2"] and "broken" in text_of(flipped)
    assert re.findall(r'tasks/(t\d)"', wrong) == ["t2", "t3", "t4"]


def test_epoch_page_says_what_each_function_did_and_links_its_tasks(story):
    with viewer(story.path.parent) as url:
        html = page(f"{url}/runs/{story.path.name}/epochs/3")
    shown = text_of(html)
    assert "What each function did" in shown
    assert "multiply 2 0 t1, t2 2 1 – – –" in shown and "divide 2 0 t3, t4 1 3 – t3 –" in shown
    assert f'href="/runs/{story.path.name}/epochs/3/tasks/t4"' in html


def test_rollout_page_shows_answer_gold_and_calls_and_links_other_epochs(story):
    with viewer(story.path.parent) as url:
        shown = text_of(page(f"{url}/runs/{story.path.name}/epochs/1/tasks/t3"))
    assert "result ✗ wrong answer answer-t3 (extracted) gold gold-t3" in shown
    assert "multiply failed: NameError" in shown
    assert "this task in epoch 0, epoch 2, epoch 3, epoch 4" in shown
    assert "← t2 · t4 →" in shown


def test_diff_page_shows_code_changes_and_flipped_tasks_with_side_by_side_links(story):
    with viewer(story.path.parent) as url:
        html = page(f"{url}/runs/{story.path.name}/diff?a=1&b=2")
        side = text_of(page(f"{url}/runs/{story.path.name}/compare/t2?a=1&b=2"))
    shown = text_of(html)
    assert "revised multiply" in shown and "- return a * b" in shown and "+ return a + b" in shown
    assert "added square" in shown
    assert re.findall(r'compare/(t\d)\?a=1&amp;b=2', html) == ["t2"]
    assert "1 fixed" not in shown and "0 fixed, 1 broken" in shown
    assert side.count("gold gold-t2") == 2 and "✓ right" in side and "✗ wrong" in side


def test_held_out_evaluations_have_their_own_rollout_pages(story):
    with viewer(story.path.parent) as url:
        run_page = page(f"{url}/runs/{story.path.name}/")
        evaluation = f"{url}/runs/{story.path.name}/evals/test-epoch-3"
        flipped = page(evaluation + "?filter=flipped")
        transcript = text_of(page(evaluation + "/tasks/q5"))
    assert re.findall(r'evals/([\w-]+)"', run_page) == ["test-epoch-0", "test-epoch-3"]
    assert "accuracy 80.0% (8/10) 95% CI (Wilson) 49.0% – 94.3%" in text_of(flipped)
    assert re.findall(r'tasks/(q\d)"', flipped) == ["q3", "q4", "q5", "q6", "q7"]  # fixed since epoch 0
    assert "this task in test · epoch 0" in transcript and "result ✓ right" in transcript


def test_model_output_is_shown_as_text_never_as_markup(tmp_path):
    run = RunDir.create(experiment(tmp_path))
    markup = '"><img src=x onerror=alert(1)>'
    hostile = rollout(HOSTILE, False).model_copy(update=dict(question=HOSTILE, extracted=markup, messages=[
        {"role": "user", "content": HOSTILE},
        {"role": "assistant", "content": f"```python\nprint({HOSTILE!r})\n```", "tool_calls": [
            {"id": "c1", "function": {"name": "<b>f</b>", "arguments": json.dumps({"x": HOSTILE})}}]},
        {"role": "user", "content": f"{HOSTILE}</pre>"},
    ]))
    save_epoch(run, 0, [], "baseline", [hostile], 0.0)
    with viewer(run.path) as url:
        epoch = page(f"{url}/runs/{run.path.name}/epochs/0")
        transcript = page(f"{url}/runs/{run.path.name}/epochs/0/tasks/{segment(HOSTILE)}")
    for html in (epoch, transcript):
        assert "<script>" not in html and "<img" not in html and "<b>f</b>" not in html
    assert "&lt;script&gt;document.title=" in transcript
    assert "sandbox output" in text_of(transcript)


def test_pages_are_sent_with_a_policy_that_forbids_scripts(story):
    with viewer(story.path.parent) as url, urllib.request.urlopen(url + "/") as response:
        policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy


def test_unknown_runs_epochs_tasks_and_paths_outside_the_folder_are_not_found(tmp_path, story):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "run.json").write_text("{}")
    with viewer(story.path.parent) as url:
        run = f"{url}/runs/{story.path.name}"
        for path, message in [
            ("/runs/nope/", "no run named 'nope'"),
            ("/runs/..%2Fsecret/", "no run named '../secret'"),
            ("/runs/%2E%2E/", "no run named '..'"),
            ("/runs/a%00b/", "no run named 'a\\x00b'"),
            (f"/runs/{story.path.name}/epochs/9", "has no epoch 9; its epochs are [0, 1, 2, 3, 4]"),
            (f"/runs/{story.path.name}/epochs/1/tasks/zz", "epoch 1 has no rollout of task 'zz'"),
        ]:
            status, body = get(url + path)
            assert (status, message) == (404, message) and message in text_of(body)
        assert get(f"{run}/diff?a=1&b=x")[0] == 404


def test_a_damaged_file_is_named_on_its_page_and_the_rest_still_serves(story):
    (story.path / "epoch-2" / "metrics.json").write_text("{ torn")
    with viewer(story.path.parent) as url:
        status, body = get(f"{url}/runs/{story.path.name}/epochs/2")
        assert status == 422 and "metrics.json: damaged JSON" in body
        assert get(f"{url}/runs/{story.path.name}/epochs/1")[0] == 200


def test_a_rollout_line_that_is_no_record_names_its_file(story):
    path = story.path / "epoch-1" / "rollouts.jsonl"
    path.write_text(json.dumps({**rollout("t1", True).to_json(), "function_calls": 3}) + "\n")
    with viewer(story.path.parent) as url:
        status, body = get(f"{url}/runs/{story.path.name}/epochs/1")
        assert status == 422 and f"{path}: not a valid rollout record (function_calls" in text_of(body)
        assert get(f"{url}/runs/{story.path.name}/epochs/0")[0] == 200


def test_an_unexpected_file_fails_its_page_only(story):
    (story.path / "epoch-1" / "functions.json").write_text('[{"name": "multiply"}]')  # hand-edited, fields lost
    with viewer(story.path.parent) as url:
        status, body = get(f"{url}/runs/{story.path.name}/epochs/1")
        assert status == 422 and "functions.json: not a function set agenttrain wrote" in body
        assert get(f"{url}/runs/{story.path.name}/epochs/0")[0] == 200


def test_requests_for_another_host_name_are_refused(story):
    with viewer(story.path.parent) as url:
        assert get(url + "/", {"Host": "attacker.example"})[0] == 403
        assert get(url + "/", {"Host": "localhost:1"})[0] == 200


def test_viewing_never_writes_to_the_run_and_refuses_writes(story):
    before = files_and_times(story.path)
    with viewer(story.path) as url:
        for path in ["/", f"/runs/{story.path.name}/", f"/runs/{story.path.name}/epochs/3",
                     f"/runs/{story.path.name}/epochs/3/tasks/t1", f"/runs/{story.path.name}/diff?a=0&b=3"]:
            page(url + path)
        request = urllib.request.Request(url + "/", data=b"x", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 501
    assert files_and_times(story.path) == before


def test_a_run_still_training_shows_new_epochs_on_refresh(tmp_path):
    run = RunDir.create(experiment(tmp_path))
    with viewer(run.path) as url, run.lock():  # a process is training it
        assert "No epoch has finished yet" in page(f"{url}/runs/{run.path.name}/")
        save_epoch(run, 0, [], "baseline", [rollout("t1", False)], 0.0, spent=usage(100))
        assert "epoch 0" in text_of(page(f"{url}/runs/{run.path.name}/"))
        save_epoch(run, 1, [], "accepted", [rollout("t1", True)], 1.0, spent=usage(100))
        shown = text_of(page(f"{url}/runs/{run.path.name}/epochs/1?filter=flipped"))
    assert "1 of 1 rollouts" in shown and "fixed" in shown


REFRESH = '<meta http-equiv="refresh" content="10">'


def test_the_pages_of_a_run_still_training_reload_themselves_and_a_finished_runs_do_not(tmp_path, story):
    running = RunDir.create(experiment(tmp_path, "live"))
    with viewer(tmp_path / "runs") as url, running.lock():  # a process is training it
        live, runs = page(f"{url}/runs/{running.path.name}/"), page(url + "/")
        done = page(f"{url}/runs/{story.path.name}/")
    assert REFRESH in live and REFRESH in runs and "reloads itself every 10 s" in text_of(live)
    assert REFRESH not in done
    assert "<script" not in live  # a meta refresh: the viewer still serves no script


def test_a_runs_transcripts_are_searched_with_the_passage_around_each_hit(story):
    with viewer(story.path.parent) as url:
        html = page(f"{url}/runs/{story.path.name}/search?q=QUESTION+of+t3")
        nothing = text_of(page(f"{url}/runs/{story.path.name}/search?q=no+such+words"))
        form = page(f"{url}/runs/{story.path.name}/")
    shown = text_of(html)
    assert "5 rollouts hold “QUESTION of t3”, ignoring case." in shown  # one in each epoch
    assert "epoch 0 t3 ✗ wrong 1 Question of t3? \\boxed{answer-t3} answer-t3 gold-t3" in shown
    assert "epoch 3 t3 ✓ right" in shown
    assert "<mark>Question of t3</mark>" in html
    assert f'href="/runs/{story.path.name}/epochs/3/tasks/t3"' in html
    assert "0 rollouts hold" in nothing
    assert f'action="/runs/{story.path.name}/search"' in form


def test_a_search_shows_model_output_as_text(tmp_path):
    run = RunDir.create(experiment(tmp_path))
    save_epoch(run, 0, [], "baseline", [rollout("t1", False).model_copy(update=dict(
        messages=[{"role": "assistant", "content": f"before {HOSTILE} after"}]))], 0.0)
    with viewer(run.path) as url:
        html = page(f"{url}/runs/{run.path.name}/search?q=document.title")
    assert "<script>" not in html and "&lt;script&gt;<mark>document.title</mark>" in html


def test_a_single_run_is_shown_alone(tmp_path, story):
    story_run(tmp_path, "other")
    with viewer(story.path) as url:
        listed = re.findall(r'data-run="([^"]+)"', page(url + "/"))
        assert listed == [story.path.name]
        assert get(f"{url}/runs/{listed[0].replace('story', 'other')}/")[0] == 404


def test_rollouts_are_paginated_and_a_transcript_is_read_alone(tmp_path):
    run = RunDir.create(experiment(tmp_path))
    records = [rollout(f"t{i:03}", i % 2 == 0) for i in range(120)]
    records[7].messages = [{"role": "user", "content": "x" * 300_000}]
    save_epoch(run, 0, [], "baseline", records, 0.5)
    with viewer(run.path) as url:
        second = page(f"{url}/runs/{run.path.name}/epochs/0?page=2")
        big = page(f"{url}/runs/{run.path.name}/epochs/0/tasks/t007")
    assert re.findall(r'tasks/(t\d+)"', second) == [f"t{i:03}" for i in range(50, 100)]
    assert "page 2 of 3" in text_of(second)
    assert "298,000 more characters" in text_of(big) and big.count("x" * 1000) == 300  # long text folds, all kept
    index = rollout_index(run.path / "epoch-0" / "rollouts.jsonl", run.format_version)
    assert index.record(index.find("t119")).id == "t119"


def test_a_long_conversation_pages_by_a_hundred_messages_also_side_by_side(tmp_path):
    run = RunDir.create(experiment(tmp_path))
    long = rollout("t1", False)
    long.messages = [{"role": "user", "content": f"message {n}"} for n in range(150)]
    save_epoch(run, 0, [], "baseline", [long], 0.0)
    save_epoch(run, 1, [], "accepted", [long.model_copy(update={"correct": True})], 1.0)
    with viewer(run.path) as url:
        first = page(f"{url}/runs/{run.path.name}/compare/t1?a=0&b=1")
        follow = re.search(r'href="([^"]+)" rel="next"', first)
        assert follow and follow[1] == f"/runs/{run.path.name}/compare/t1?a=0&amp;b=1&amp;page=2"
        second = text_of(page(url + follow[1].replace("&amp;", "&")))
    assert "message 99" in text_of(first) and "message 100" not in text_of(first)
    assert second.count("message 149") == 2 and "message 99 " not in second and "page 2 of 2" in second


def test_flipped_tasks_of_a_diff_are_paginated(tmp_path):
    run = RunDir.create(experiment(tmp_path))
    save_epoch(run, 0, [], "baseline", [rollout(f"t{i:02}", False) for i in range(60)], 0.0)
    save_epoch(run, 1, [], "accepted", [rollout(f"t{i:02}", True) for i in range(60)], 1.0)
    with viewer(run.path) as url:
        first = page(f"{url}/runs/{run.path.name}/diff?a=0&b=1")
        second = page(f"{url}/runs/{run.path.name}/diff?a=0&b=1&page=2")
    assert "60 fixed, 0 broken" in text_of(first) and "Tasks that flipped (60)" in text_of(first)
    assert re.findall(r'epochs/1/tasks/(t\d+)"', second) == [f"t{i}" for i in range(50, 60)]


def test_a_torn_last_line_is_skipped_and_a_rewritten_file_is_indexed_again(tmp_path):
    path = tmp_path / "rollouts.jsonl"
    path.write_text(json.dumps(rollout("a", True).to_json()) + "\n" + '{"id": "b", "corr')
    assert [r.id for r in rollout_index(path, FORMAT_VERSION).rows] == ["a"]
    path.write_text(json.dumps(rollout("a", True).to_json()) + "\n" + json.dumps(rollout("b", False).to_json()) + "\n")
    assert [(r.id, r.correct) for r in rollout_index(path, FORMAT_VERSION).rows] == [("a", True), ("b", False)]


def test_a_conversation_names_each_message_and_pretty_prints_tool_arguments():
    messages = [
        {"role": "system", "content": "You solve tasks."},
        {"role": "user", "content": "What is 6 times 7?"},
        {"role": "assistant", "content": "Compute:\n```python\nprint(6 * 7)\n```"},
        {"role": "user", "content": "42"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "function": {"name": "multiply", "arguments": '{"a": 6, "b": 7}'}},
            {"id": "c2", "function": {"name": "multiply", "arguments": "{not json"}},
            {"id": "c3", "function": "not an object"}]},
        {"role": "tool", "tool_call_id": "c1", "name": "multiply", "content": "42"},
        {"role": "user", "content": "Observation: 42"},
        {"role": "assistant", "content": "So \\boxed{42}.", "reasoning_content": "6 times 7 is 42."},
    ]
    turns = conversation(messages)
    assert [t.label for t in turns] == ["system prompt", "task", "assistant", "sandbox output", "assistant",
                                        "result of multiply", "observation", "assistant"]
    assert [(s.kind, s.language) for s in turns[2].segments] == [("text", "text"), ("code", "python")]
    thinking_then_answer = [("reasoning", "6 times 7 is 42."), ("text", "So \\boxed{42}.")]
    assert [(s.kind, s.text) for s in turns[7].segments] == thinking_then_answer
    assert [(c.name, c.arguments, c.language) for c in turns[4].tool_calls] == [
        ("multiply", '{\n  "a": 6,\n  "b": 7\n}', "json"), ("multiply", "{not json", "text"), ("?", "null", "json")]


def test_view_of_a_missing_folder_is_one_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["view", str(tmp_path / "nowhere"), "--no-browser"])
    assert result.exit_code != 0
    assert "no such folder; give a run directory or the folder that holds runs" in str(result.exception)


def test_view_on_a_busy_port_names_the_fix(story):
    with viewer(story.path) as url:
        busy = url.rsplit(":", 1)[1]
        result = CliRunner().invoke(app, ["view", str(story.path), "--port", busy, "--no-browser"])
    assert "pass another --port, or 0 for any free one" in str(result.exception)


@pytest.mark.slow
def test_view_opens_the_browser_at_the_run_it_was_given(story, tmp_path):
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"  # what $BROWSER names is what Python's webbrowser runs
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser.chmod(0o755)
    with viewer_process(story.path, env={"BROWSER": str(browser)}) as url:
        for _ in range(100):
            if opened.exists() and opened.read_text().strip():
                break
            time.sleep(0.1)
        assert opened.read_text().strip() == url
    assert re.fullmatch(rf"http://127\.0\.0\.1:\d+/runs/{story.path.name}/", url)  # the run it was given


# -- in a real browser, over a run trained against the fake server ----------------------------------------------


def coding_agent(body: dict[str, Any]) -> Reply:
    """Without tools it runs code whose output is hostile HTML, then gives up; with `multiply` it is right."""
    if "multiply" in offered_tools(body) or tool_results(body):
        return multiplying_agent(body)
    if len(body["messages"]) > 2:
        return boxed(0)
    return Reply(content=f"Let me compute.\n```python\nprint({HOSTILE!r})\n```")


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained against the fake server (epoch 0 wrong everywhere, epoch 1 adds multiply and is right) and
    evaluated on test at epochs 0 and 1, beside the hand-made story run."""
    folder = tmp_path_factory.mktemp("viewer")
    problems = [("What is 6 times 7?", "42"), ("What is 5 times 8?", "40"), ("What is 3 times 9?", "27"),
                ("What is 4 times 4?", "16"), ("What is 2 times 9?", "18")]
    data = write_problems(folder / "problems.jsonl", problems)

    def responder(body: dict[str, Any]) -> Reply:
        if is_optimizer(body):
            return TERMINATE if "multiply" in list_b(body) else add("multiply", MULTIPLY)
        return coding_agent(body)

    with FakeOpenAI(responder) as server, pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
        config = folder / "config.yaml"
        config.write_text(json.dumps({  # JSON is YAML
            "name": "products",
            "task": {"name": "math", "path": str(data), "train_size": 2, "test_size": 3, "seed": 0},
            "agent": {"model": "agent-model", "max_turns": 4},
            "optimizer": {"model": "optimizer-model", "epochs": 2, "early_stop": 5},
            "llm": {"base_url": server.base_url, "cache_dir": str(folder / "cache"), "max_retries": 0},
            "sandbox": {"timeout_s": 10, "warm_workers": 1}, "output_dir": str(folder / "runs"),
        }))
        run = api.train(config).run
        for epoch in ("0", "1"):
            api.eval_run(run.path, epoch, "test")
    story_run(folder)
    return folder / "runs"


def browser_or_skip() -> Any:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (Debian package chromium; .ci/run installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (make install adds the browser-tests extra)")
    return sync_playwright


@contextmanager
def viewer_process(path: Path, *options: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """`agenttrain view PATH --port 0 [options]` as a user starts it; yields the URL it prints."""
    command = [sys.executable, "-c", "from agenttrain.cli import main; main()", "view", str(path), "--port", "0",
               *options]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    found = None
    try:
        printed = []  # the URL line, after any warning printed before it
        while process.stderr and (line := process.stderr.readline()):
            printed.append(line)
            if found := re.search(r"serving (http://\S+)", line):
                break
        assert found, f"the viewer did not start: {''.join(printed)}"
        yield found[1]
    finally:
        process.terminate()
        process.wait(timeout=10)


def screenshots_dir(tmp_path: Path) -> Path:
    """docs/ when VIEWER_SCREENSHOTS names it (`make screenshots`), else the test's own folder."""
    folder = Path(os.environ.get("VIEWER_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def follow(tab: Any, selector: str) -> None:
    """Click a link and wait for the page it opens (a slow machine must not read the old page)."""
    with tab.expect_navigation():
        tab.click(selector)


@pytest.mark.slow
@pytest.mark.browser
def test_a_reader_clicks_from_the_runs_list_to_a_flipped_task_and_its_transcripts(trained_runs, tmp_path):
    sync_playwright = browser_or_skip()
    shots = screenshots_dir(tmp_path)
    with viewer_process(trained_runs, "--no-browser") as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        tab = browser.new_page(viewport={"width": 1240, "height": 480})
        tab.goto(url)
        assert tab.locator("#runs tbody tr").count() == 2
        tab.screenshot(path=str(shots / "viewer-runs.png"), full_page=True)

        follow(tab, "#runs a >> text=story")
        marks = tab.locator("svg.curve circle.mark")
        assert [marks.nth(i).get_attribute("class") for i in range(5)] == [
            "mark baseline", "mark accepted", "mark rolled_back", "mark accepted", "mark unchanged"]
        tab.screenshot(path=str(shots / "viewer-run.png"), full_page=True)

        follow(tab, ".crumbs a >> text=runs")
        follow(tab, "#runs a >> text=products")
        assert tab.locator("svg.curve circle.mark").count() == 3  # epochs 0, 1 and 2
        assert tab.locator("svg.curve polygon.held-out-mark").count() == 2  # test at epochs 0 and 1
        assert "accepted" in tab.inner_text("#epochs")

        follow(tab, "#epochs >> text=epoch 1")
        assert "multiply" in tab.inner_text(".function h3")
        follow(tab, "[data-filter=flipped]")
        rows = tab.locator("#rollouts tbody tr")
        assert rows.count() == 2 and all("fixed" in rows.nth(i).inner_text() for i in range(2))
        tab.screenshot(path=str(shots / "viewer-epoch.png"), full_page=True)

        task = rows.first.locator("a").inner_text()
        follow(tab, f"#rollouts a >> text={task}")
        transcript = tab.inner_text("main")
        assert "calls multiply" in transcript and '"a":' in transcript
        assert "result of multiply" in transcript and "✓ right" in transcript
        tab.screenshot(path=str(shots / "viewer-rollout.png"), full_page=True)

        follow(tab, "text=epoch 0 >> nth=-1")  # this task in epoch 0: the code run, hostile output shown as text
        assert "sandbox output" in tab.inner_text("main") and HOSTILE in tab.inner_text("pre.output")
        assert tab.title() != "pwned"

        follow(tab, ".crumbs a >> nth=1")
        follow(tab, "#epochs >> text=0 → 1")
        assert "added" in tab.inner_text("main") and "def multiply" in tab.inner_text("main")
        tab.screenshot(path=str(shots / "viewer-diff.png"), full_page=True)
        follow(tab, f"#flips tr:has-text('{task}') >> text=side by side")
        columns = tab.locator(".side-by-side .column")
        assert columns.count() == 2
        assert "✗ wrong" in columns.nth(0).inner_text() and "✓ right" in columns.nth(1).inner_text()
        tab.screenshot(path=str(shots / "viewer-side-by-side.png"), full_page=True)
        browser.close()
    for name in ("runs", "run", "epoch", "rollout", "diff", "side-by-side"):
        assert (shots / f"viewer-{name}.png").stat().st_size > 1000
