"""What is read from disk (a run folder or cache someone else made, or that a crash damaged) is checked as strictly
as what is written: it never makes agenttrain write outside the run folder, and damage is a clear error or a miss,
never a failed run or a traceback."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sqlite3
import urllib.parse
from pathlib import Path

import pytest
import yaml

from agenttrain import api
from agenttrain.config import LocalModelConfig, load_experiment
from agenttrain.endpoint.cache import ResponseCache
from agenttrain.endpoint.local_model import cache_identity, open_log
from agenttrain.errors import UserError
from agenttrain.functions import FunctionSet
from agenttrain.rundir.directory import RunDir, WriteError, read_journal_lines, read_run_json
from agenttrain.training.trust import is_trusted_url, named_alike
from tests.support.fake_openai import FakeOpenAI
from tests.support.files import write_problems
from tests.support.run_factory import MULTIPLY, rollout, save_epoch, story_run
from tests.support.scripted import multiplying_agent
from tests.support.viewing import viewer

PRECIOUS = "precious\n"


@pytest.fixture(scope="module")
def story_template(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    return story_run(tmp_path_factory.mktemp("story"), evaluated=False)


def copy_of(template: RunDir, folder: Path) -> RunDir:
    """The story run copied into `folder`/runs/ (written once per module: its snapshots are fsynced)."""
    return RunDir(Path(shutil.copytree(template.path, folder / "runs" / template.path.name)))


@pytest.fixture
def story(story_template: RunDir, tmp_path: Path) -> RunDir:
    return copy_of(story_template, tmp_path)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file outside the run that a link inside it points to: it must stay as it is."""
    path = tmp_path / "victim.txt"
    path.write_text(PRECIOUS)
    return path


def link(path: Path, target: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    path.symlink_to(target)


# -- function names and paths built from run files ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../escaped", "multiply/../../x", "python", "multiply\n", 7])
def test_a_function_name_that_is_no_identifier_is_refused_when_a_snapshot_is_read(story, name):
    path = story.path / "epoch-3" / "functions.json"
    saved = json.loads(path.read_text())
    saved[0]["name"] = name
    path.write_text(json.dumps(saved))
    with pytest.raises(UserError, match=r"functions\.json: not a function set agenttrain wrote"):
        story.snapshot(3)
    with pytest.raises(UserError, match=r"functions\.json"):
        api.export(story.path, "3")


@pytest.mark.parametrize("saved", [{"name": "multiply"}, [{"name": "multiply"}], [MULTIPLY.to_dict()] * 2, "x"])
def test_a_functions_file_of_another_shape_is_one_clear_error(story, saved):
    (story.path / "epoch-1" / "functions.json").write_text(json.dumps(saved))
    with pytest.raises(UserError, match=r"epoch-1/functions\.json"):
        story.snapshot(1)


def test_code_in_a_snapshot_too_deep_to_parse_is_one_clear_error_on_export(story):
    path = story.path / "epoch-3" / "functions.json"
    saved = json.loads(path.read_text())
    saved[0]["code"] = "def multiply(a, b):\n    return " + "-" * 100_000 + "a\n"
    path.write_text(json.dumps(saved))
    with pytest.raises(UserError, match=r"functions\.json: a function's code does not parse"):
        api.export(story.path, "3")
    assert "multiply" in api.export(story.path, "3", fmt="json")[1]


def test_a_saved_function_set_reads_back_as_it_was_written():
    functions = FunctionSet((MULTIPLY,))
    assert FunctionSet.from_json(functions.to_json()) == functions


# -- links inside a run folder are never followed for writing ----------------------------------------------------


def test_a_lock_file_that_is_a_link_is_replaced_not_followed(story, victim):
    link(story.path / ".lock", victim)
    with story.lock():
        assert story.locked_by() == os.getpid()
    assert victim.read_text() == PRECIOUS and not (story.path / ".lock").is_symlink()


def test_a_journal_that_is_a_link_is_refused_with_the_fix(story, victim):
    link(story.path / "events.jsonl", victim)
    with pytest.raises(WriteError, match=r"events\.jsonl: it is a symbolic link.*replace it with the file"):
        story.log("resume")
    assert victim.read_text() == PRECIOUS


def test_run_json_that_is_a_link_is_replaced_by_a_file(story, tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text((story.path / "run.json").read_text())
    link(story.path / "run.json", outside)
    story.update_info(status="interrupted")
    assert json.loads(outside.read_text())["status"] == "finished" and story.info().status == "interrupted"


def test_a_leftover_snapshot_folder_that_is_a_link_is_removed_not_written_into(story, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (story.path / ".epoch-5.tmp").symlink_to(outside, target_is_directory=True)
    story.remove_leftovers()
    (story.path / ".epoch-5.tmp").symlink_to(outside, target_is_directory=True)  # left again by a crash
    save_epoch(story, 5, [MULTIPLY], "unchanged", [rollout("t1", True)], 0.75)
    assert list(outside.iterdir()) == [] and (story.path / "epoch-5" / "functions" / "multiply.py").is_file()


def test_a_snapshot_folder_that_is_a_dangling_link_is_never_overwritten(story, tmp_path):
    (story.path / "epoch-5").symlink_to(tmp_path / "nowhere", target_is_directory=True)
    with pytest.raises(UserError, match="epoch-5 already exists"):
        save_epoch(story, 5, [MULTIPLY], "unchanged", [rollout("t1", True)], 0.75)
    assert not (tmp_path / "nowhere").exists()


def test_the_local_model_servers_log_that_is_a_link_is_refused(story, victim):
    link(story.path / "local-server.log", victim)
    with pytest.raises(WriteError, match=r"local-server\.log: it is a symbolic link"):
        open_log(story.path / "local-server.log")
    assert victim.read_text() == PRECIOUS


def test_a_report_folder_that_is_a_link_is_refused(story, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    link(story.path / "report", outside)
    with pytest.raises(WriteError, match="report is a symbolic link"):
        api.report(story.path)
    assert list(outside.iterdir()) == []


@pytest.mark.slow
def test_eval_into_an_evals_folder_that_is_a_link_is_refused_before_any_rollout(write_config, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    with FakeOpenAI(multiplying_agent) as server:
        data = write_problems(tmp_path / "problems.jsonl", [*PRODUCTS, ("What is 2 times 3?", "6")])
        run = api.train(write_config(server.base_url, data, optimizer={"epochs": 0})).run
        link(run.path / "evals", outside)
        sent = len(server.requests)
        with pytest.raises(WriteError, match="evals is a symbolic link"):
            api.eval_run(run.path)
        assert len(server.requests) == sent and list(outside.iterdir()) == []


@pytest.mark.slow
def test_a_journaled_proposal_agenttrain_did_not_write_is_one_clear_error_on_resume(write_config, tmp_path):
    with FakeOpenAI(multiplying_agent) as server:
        data = write_problems(tmp_path / "problems.jsonl", [*PRODUCTS, ("What is 2 times 3?", "6")])
        run = api.train(write_config(server.base_url, data, optimizer={"epochs": 0})).run
        escaping = {**MULTIPLY.to_dict(), "name": "../../escaped"}
        run.log("candidate", epoch=1, key="step", functions=[escaping], actions=[], prompt_cuts=[])
        with pytest.raises(UserError, match=r"events\.jsonl: a journaled proposal agenttrain did not write"):
            api.resume(run.path, ["optimizer.epochs=1"])
    assert not (tmp_path / "escaped.py").exists()


# -- damaged files are read as damaged -----------------------------------------------------------------------------


def test_journal_lines_that_are_damaged_too_deep_or_no_object_are_skipped(story):
    good = {"event": "resume", "time": "t"}
    lines = [b"\xff\xfe{", b"[" * 5000, b"[1, 2]", b'"text"', json.dumps(good).encode(),
             b'{"event": "x", "s": "\\ud800"}']
    (story.path / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    assert read_journal_lines(story.path / "events.jsonl") == [good, {"event": "x", "s": "\ufffd"}]


@pytest.mark.parametrize("content", [b"\xff\xfe not utf-8", b"[" * 5000, b"{"])
def test_a_run_json_that_is_damaged_is_one_clear_error(story, content):
    (story.path / "run.json").write_bytes(content)
    with pytest.raises(UserError, match=r"run\.json: damaged JSON"):
        read_run_json(story.path / "run.json")


def test_a_journaled_usage_of_another_shape_is_not_trusted_with_the_budget(story):
    story.log("rollout", usage={"agent": {"cost_usd": 1.0}})
    story.log("rollout", usage={"agent": "a lot"})
    story.log("rollout", usage=[1, 2])
    assert story.spent() == {"agent": {"cost_usd": 1.0}}


# -- the response cache: damaged entries and files are misses ------------------------------------------------------


def test_cache_entries_that_are_damaged_are_misses_with_one_warning(tmp_path, caplog):
    cache = ResponseCache(tmp_path)
    cache.put("good", {"message": {"role": "assistant", "content": "hi"}})
    for key, value in [("torn", '{"message": {"ro'), ("deep", "[" * 5000), ("number", 7), ("blob", b"\xff")]:
        cache._db.execute("INSERT INTO responses (key, value) VALUES (?, ?)", (key, value))
    with caplog.at_level(logging.WARNING):
        assert [cache.get(key) for key in ("torn", "deep", "number", "blob", "torn")] == [None] * 5
    assert cache.get("good") == {"message": {"role": "assistant", "content": "hi"}}
    assert len([r for r in caplog.records if "response cache" in r.message]) == 1


def test_a_reply_holding_a_lone_surrogate_is_cached_as_valid_text(tmp_path):
    cache = ResponseCache(tmp_path)
    cache.put("k", {"message": {"content": "a\ud800b"}})
    assert cache.get("k") == {"message": {"content": "a\ufffdb"}}


PRODUCTS = [("What is 6 times 7?", "42"), ("What is 5 times 8?", "40")]


@pytest.mark.slow
def test_a_cache_with_damaged_or_newer_entries_and_a_truncated_file_never_fails_a_run(write_config, tmp_path, caplog):
    with FakeOpenAI(multiplying_agent) as server:
        data = write_problems(tmp_path / "problems.jsonl", [*PRODUCTS, ("What is 2 times 3?", "6")])
        config = write_config(server.base_url, data, task={"train_size": 3, "test_size": 0}, optimizer={"epochs": 0})
        api.train(config)
        sent = len(server.requests)
        cache_file = tmp_path / "cache" / "responses.sqlite3"
        newer = [{"message": {"content": None}, "v9": 1}, {"message": {"content": "x", "tool_calls": [{"id": 1}]}}]
        with sqlite3.connect(cache_file) as db:
            keys = [key for (key,) in db.execute("SELECT key FROM responses")]
            for key, value in zip(keys, ['{"message": {"ro', *map(json.dumps, newer)], strict=True):
                db.execute("UPDATE responses SET value = ? WHERE key = ?", (value, key))
        with caplog.at_level(logging.WARNING):
            assert api.train(config).run.info().status == "finished"
        assert len(server.requests) == sent + 3  # the damaged entries were sent again
        assert len([r for r in caplog.records if "cannot read" in r.message]) == 2  # one per kind, once each
        cache_file.write_bytes(cache_file.read_bytes()[:1000])  # truncated: no longer a database
        for leftover in cache_file.parent.glob("responses.sqlite3-*"):
            leftover.unlink()
        assert api.train(config).run.info().status == "finished"


# -- the embedded model's cache identity ---------------------------------------------------------------------------


def test_the_local_models_cache_identity_is_its_content_and_the_settings_that_change_replies(tmp_path):
    one, two = tmp_path / "one" / "model.gguf", tmp_path / "two" / "model.gguf"
    for path, content in ((one, b"weights A"), (two, b"weights B")):
        path.parent.mkdir()
        path.write_bytes(content)
    identity = cache_identity(LocalModelConfig(model_path=one))
    assert identity != cache_identity(LocalModelConfig(model_path=two))  # same name and size, other weights
    assert identity != cache_identity(LocalModelConfig(model_path=one, context_size=2048))
    assert identity != cache_identity(LocalModelConfig(model_path=one, max_tokens=64))
    assert identity == cache_identity(LocalModelConfig(model_path=one, threads=4, parallel=2))
    stat = one.stat()
    one.write_bytes(b"weights C")  # same size; with its time put back it is taken for the file already hashed
    os.utime(one, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cache_identity(LocalModelConfig(model_path=one)) == identity


# -- the viewer: only files inside the runs folder, and a 4xx page for every malformed query ----------------------


def raw_get(url: str, target: bytes) -> tuple[int, bytes]:
    """One request with `target` sent as it is (no client-side quoting); the status and the whole body."""
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as connection:
        connection.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        response = b""
        while chunk := connection.recv(65536):
            response += chunk
    assert response, f"{target!r}: the connection was dropped without an answer"
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


MALFORMED = [
    b"/?page=" + b"9" * 5000, "/?page=²".encode(), b"/?page=%ff%fe", b"/runs/%ff%fe/", b"/runs/%ED%A0%80/",
    b"/runs/\xff\xfe/", b"/runs/a%00b/", b"/RUN/epochs/" + b"9" * 5000, "/RUN/epochs/٣".encode(),
    "/RUN/epochs/3?page=²".encode(), b"/RUN/epochs/3/tasks/%00", b"/RUN/epochs/3/tasks/%ED%A0%80",
    b"/RUN/evals/%00x", "/RUN/diff?a=²&b=3".encode(), b"/RUN/diff?a=" + b"1" * 5000 + b"&b=3",
    b"/RUN/compare/t1?a=%00&b=3", b"/static/%00", b"/static/../../../etc/passwd", b"//[x", b"/?page=-1",
]


def test_every_malformed_query_gets_a_4xx_page(story):
    with viewer(story.path.parent) as url:
        answers = {target: raw_get(url, target.replace(b"/RUN", f"/runs/{story.path.name}".encode()))
                   for target in MALFORMED}
    assert {target: status for target, (status, body) in answers.items() if not (400 <= status < 500 and body)} == {}


def test_a_huge_page_number_is_an_ordinary_page(story):
    with viewer(story.path.parent) as url:
        status, _ = raw_get(url, f"/runs/{story.path.name}/epochs/3?page=99999999".encode())
    assert status in (200, 404)


def test_text_that_is_not_valid_unicode_in_a_run_is_shown_with_a_replacement_character(story):
    path = story.path / "epoch-3" / "rollouts.jsonl"
    line = json.dumps({**rollout("t9", True).to_json(), "question": "x\ud800y"})
    path.write_text(path.read_text() + line + "\n", encoding="utf-8", errors="surrogatepass")
    with viewer(story.path.parent) as url:
        status, body = raw_get(url, f"/runs/{story.path.name}/epochs/3/tasks/t9".encode())
    assert status == 200 and "x\ufffdy" in body.decode()


def folder(path: Path) -> Path:
    path.mkdir()
    return path


def test_a_run_that_links_outside_the_runs_folder_is_not_served(tmp_path, story_template):
    outside = copy_of(story_template, folder(tmp_path / "elsewhere"))
    runs = tmp_path / "runs-shown"
    runs.mkdir()
    (runs / "linked").symlink_to(outside.path, target_is_directory=True)
    with viewer(runs) as url:
        status, _ = raw_get(url, b"/runs/linked/")
        listing = raw_get(url, b"/")[1].decode()
    assert status == 404 and "secret" not in listing


@pytest.mark.parametrize("inside", ["epoch-1/rollouts.jsonl", "run.json", "epoch-1", "config.yaml"])
def test_a_file_of_a_run_that_links_outside_the_runs_folder_is_not_served(tmp_path, story_template, inside):
    shown = copy_of(story_template, folder(tmp_path / "shown"))
    outside = copy_of(story_template, folder(tmp_path / "elsewhere"))
    link(shown.path / inside, outside.path / inside)
    (outside.path / "epoch-1" / "rollouts.jsonl").write_text(
        json.dumps({**rollout("t1", True).to_json(), "question": "THE-SECRET"}) + "\n")
    with viewer(shown.path.parent) as url:
        pages = [raw_get(url, f"/runs/{shown.path.name}{page}".encode()) for page in
                 ("/", "/epochs/1", "/epochs/1/tasks/t1")]
        listing = raw_get(url, b"/")
    assert all(status in (403, 404) for status, _ in pages)
    assert all(b"THE-SECRET" not in body for _, body in [*pages, listing])


# -- eval and --resume of a run folder someone else made -------------------------------------------------------------


@pytest.mark.parametrize(("url", "trusted"), [
    ("https://api.openai.com/v1", True), ("http://api.openai.com/v1", False), ("https://x.openai.azure.com/", False),
    ("https://api.openai.com.example.net/v1", False), ("http://localhost:8000/v1", True),
    ("http://[::1]:8000/v1", True), ("http://127.0.0.5:1/v1", True), ("http://10.0.0.1:8000/v1", False),
    ("local", True), ("http://2130706433:8000/v1", False),
])
def test_loopback_and_well_known_providers_are_the_endpoints_trusted_without_asking(url, trusted):
    assert is_trusted_url(url) == trusted


def another_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """From here on, this process signs and checks run folders with another user's key."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "another-user"))


def foreign_run(run: RunDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **config: object) -> RunDir:
    saved = yaml.safe_load((run.path / "config.yaml").read_text())
    for section, values in config.items():
        saved[section] = {**saved.get(section, {}), **values}  # type: ignore[dict-item]
    (run.path / "config.yaml").write_text(yaml.safe_dump(saved))
    another_user(monkeypatch, tmp_path)
    return run


def test_a_remote_ray_cluster_named_by_a_foreign_run_folder_needs_the_flag(story, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    run = foreign_run(story, tmp_path, monkeypatch, executor={"kind": "ray", "address": "ray://10.1.2.3:10001"})
    with pytest.raises(UserError, match=r"the Ray workers .* to ray://10\.1\.2\.3:10001.*--trust-endpoint"):
        api.eval_run(run.path, offline=True)


def test_an_endpoint_named_by_a_foreign_run_folder_is_refused_before_any_request(story, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    run = foreign_run(story, tmp_path, monkeypatch, llm={"base_url": "http://203.0.113.9:8000/v1"})
    for attempt in (lambda: api.eval_run(run.path), lambda: api.resume(run.path)):
        with pytest.raises(UserError) as refused:
            attempt()
        message = str(refused.value)
        assert "was not made by you on this machine" in message and "http://203.0.113.9:8000/v1" in message
        assert "$OPENAI_API_KEY" in message and "--trust-endpoint" in message and "--set llm.base_url" in message
    assert run.info().status == "finished"  # nothing was touched


def test_an_mlflow_server_named_by_a_foreign_run_folder_needs_the_flag(story, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    run = foreign_run(story, tmp_path, monkeypatch, tracking={"mlflow": {"tracking_uri": "https://198.51.100.7"}})
    with pytest.raises(UserError, match=r"MLflow logging .* to https://198\.51\.100\.7.*--trust-endpoint"):
        api.eval_run(run.path, offline=True)


def test_a_foreign_run_folder_that_hands_your_variables_to_its_code_needs_the_flag(story, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    run = foreign_run(story, tmp_path, monkeypatch, sandbox={"env_allow": ["OPENAI_API_KEY", "UNSET_HERE"]})
    # its maker wrote run.json too: the recorded hash is that of the config as it is
    run.update_info(config_hash=load_experiment(run.path / "config.yaml").content_hash())
    for attempt in (lambda: api.eval_run(run.path, offline=True), lambda: api.resume(run.path, offline=True)):
        with pytest.raises(UserError, match=r"sends your \$OPENAI_API_KEY to its functions' code \(sandbox\.env_allow\)"
                                            r".*--trust-endpoint"):
            attempt()
    assert run.info().status == "finished"  # nothing was touched


def test_a_sweep_trusts_a_run_folders_endpoints_where_its_own_config_names_the_same(story, tmp_path, monkeypatch):
    run = foreign_run(story, tmp_path, monkeypatch, llm={"base_url": "http://203.0.113.9:8000/v1"})
    given = load_experiment(run.path / "config.yaml")  # the sweep's config file names the same endpoint
    assert named_alike(run, given)
    elsewhere = given.llm.model_copy(update={"base_url": "http://198.51.100.7:8000/v1"})
    assert not named_alike(run, given.model_copy(update={"llm": elsewhere}))


@pytest.mark.slow
def test_eval_and_resume_of_a_foreign_run_need_the_flag_and_a_resume_with_it_adopts_the_run(write_config, tmp_path,
                                                                                              monkeypatch, caplog):
    with FakeOpenAI(multiplying_agent) as server:
        port = server.base_url.split(":")[2].split("/")[0]
        # an address that reaches the fake server but that the trust rule does not know as this machine
        elsewhere = f"http://2130706433:{port}/v1"
        data = write_problems(tmp_path / "problems.jsonl", [*PRODUCTS, ("What is 2 times 3?", "6")])
        config = write_config(elsewhere, data, optimizer={"epochs": 0})
        run = api.train(config).run
        assert api.eval_run(run.path)["n"] == 1  # your own run: its endpoint is yours
        another_user(monkeypatch, tmp_path)
        sent = (len(server.requests), server.model_lists)
        with pytest.raises(UserError, match=f"sends the agent's requests .* to {elsewhere}"):
            api.eval_run(run.path)
        assert (len(server.requests), server.model_lists) == sent  # not even the preflight went out
        assert api.eval_run(run.path, trust_endpoint=True, use_cache=False)["n"] == 1
        assert api.eval_run(run.path, overrides=[f"llm.base_url={server.base_url}"], use_cache=False)["n"] == 1
        with caplog.at_level(logging.WARNING):  # a foreign folder's loopback endpoint: used, and said so
            (run.path / "config.yaml").write_text((run.path / "config.yaml").read_text().replace(elsewhere,
                                                                                                 server.base_url))
            assert api.eval_run(run.path, use_cache=False)["n"] == 1
        assert any(server.base_url in r.message and "not made by you" in r.message for r in caplog.records)
        (run.path / "config.yaml").write_text((run.path / "config.yaml").read_text().replace(server.base_url,
                                                                                             elsewhere))
        assert api.resume(run.path, trust_endpoint=True).status == "finished"
        assert api.eval_run(run.path, use_cache=False)["n"] == 1  # adopted: now signed with this user's key
