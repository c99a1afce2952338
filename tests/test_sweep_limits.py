"""A sweep's limits hold for all its jobs together: one request limit per endpoint, shared fairly and adapted once,
and one budget that stops running jobs resumably; a rerun with a larger budget continues them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agenttrain import api
from agenttrain.cli import app
from agenttrain.errors import UserError
from agenttrain.rundir.directory import RunDir, find_runs
from agenttrain.sweeping import plan_sweep
from agenttrain.sweeping.job import job_spend
from agenttrain.sweeping.ledger import Seat, Spend, SweepLedger, SweepLimits
from tests.support.fake_openai import FakeOpenAI
from tests.support.files import write_problems
from tests.test_sweep import PROBLEMS, responder

runner = CliRunner()
PRICE = {"input": 1000.0, "output": 2000.0}  # dollars per million tokens: the fake's 10 + 5 tokens cost $0.02
REQUEST_USD = 0.02


def config(write_config, server: FakeOpenAI, tmp_path: Path, concurrency: int = 4) -> Path:
    data = write_problems(tmp_path / "problems.jsonl", PROBLEMS)
    return write_config(server.base_url, data, task={"train_size": 2, "test_size": 3}, optimizer={"epochs": 1},
                        llm={"concurrency": concurrency, "prices": {"agent-model": PRICE, "optimizer-model": PRICE}})


def sweep(*args: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, ["sweep", *args, "--json"])
    assert result.exit_code in (0, 1), result.output + repr(result.exception)
    return result.exit_code, json.loads(result.stdout)


@pytest.mark.slow
def test_the_jobs_of_a_sweep_share_one_request_limit_per_endpoint(write_config, tmp_path):
    with FakeOpenAI(responder, latency_s=0.1) as server:
        path = config(write_config, server, tmp_path, concurrency=4)
        code, result = sweep(str(path), "--out", str(tmp_path / "out"), "--seeds", "0,1,2", "--jobs", "3",
                             "--concurrency", "2")
    assert code == 0 and all(row["status"] == "finished" for row in result["rows"])
    assert server.max_in_flight == 2  # three jobs of four rollouts each would send up to twelve


@pytest.mark.slow
def test_a_spent_sweep_budget_stops_running_jobs_and_a_rerun_with_a_larger_one_continues_them(write_config, tmp_path):
    out = tmp_path / "out"
    with FakeOpenAI(responder, latency_s=0.05) as server:
        path = config(write_config, server, tmp_path)
        code, stopped = sweep(str(path), "--out", str(out), "--seeds", "0,1", "--jobs", "2", "--max-usd", "0.1")
        sent = len(server.requests)
        jobs = plan_sweep([path], out, [0, 1], [])
        spent = sum((job_spend(job) for job in jobs), Spend())
        assert code == 1
        assert {row["status"] for row in stopped["rows"]} == {"budget_exhausted"}
        assert all("the sweep's budget is spent" in row["error"] for row in stopped["rows"])
        assert spent.usd == pytest.approx(sent * REQUEST_USD)
        assert spent.usd <= 0.1 + 2 * REQUEST_USD  # never more than one request's cost per job beyond the limit

        code, again = sweep(str(path), "--out", str(out), "--seeds", "0,1", "--jobs", "2", "--max-usd", "0.1")
        assert code == 1 and len(server.requests) == sent  # the same budget: nothing is started, nothing sent
        assert all("the sweep's budget is spent" in row["error"] for row in again["rows"])

        code, finished = sweep(str(path), "--out", str(out), "--seeds", "0,1", "--jobs", "2", "--max-usd", "5")
    assert code == 0
    assert all(row["status"] == "finished" and row["difference"] is not None for row in finished["rows"])
    runs = [RunDir(p) for p in find_runs(out / "runs")]
    assert len(runs) == 2 and all(any(e["event"] == "resume" for e in run.events()) for run in runs)


@pytest.mark.slow
def test_a_run_the_sweeps_budget_stopped_is_an_ordinary_run_that_train_resume_continues(write_config, tmp_path):
    out = tmp_path / "out"
    with FakeOpenAI(responder) as server:
        path = config(write_config, server, tmp_path)
        sweep(str(path), "--out", str(out), "--max-usd", "0.05")
        [run] = [RunDir(p) for p in find_runs(out / "runs")]
        assert run.info().status == "budget_exhausted"
        assert api.resume(run.path).status == "finished"


def test_the_dry_run_prints_the_sweeps_total_next_to_its_limit(write_config, tmp_path):
    with FakeOpenAI(responder) as server:
        path = config(write_config, server, tmp_path)
        estimate = api.dry_run_sweep([path], [0, 1], max_usd=0.5, out=tmp_path / "out")
        table = runner.invoke(app, ["sweep", str(path), "--out", str(tmp_path / "out"), "--seeds", "0,1",
                                    "--max-usd", "0.5", "--dry-run"])
    assert estimate["limits"]["max_usd"] == 0.5 and estimate["spent"] == {"tokens": 0, "cost_usd": 0.0}
    assert estimate["total"]["cost_usd"] == pytest.approx(sum(job["cost_usd"] for job in estimate["jobs"]))
    assert (f"sweep limit $0.50: estimated total ${estimate['total']['cost_usd']:,.2f} (worst case "
            f"${estimate['total']['worst_case_cost_usd']:,.2f}), $0.00 spent so far") in table.stdout


@pytest.mark.parametrize("option", ["--max-usd", "--max-tokens", "--concurrency"])
def test_a_limit_of_zero_is_one_clear_error(option, tmp_path):
    result = runner.invoke(app, ["sweep", str(tmp_path / "none.yaml"), "--out", str(tmp_path), option, "0"])
    assert result.exit_code != 0 and isinstance(result.exception, UserError)
    assert f"{option} 0: give a number above 0" in str(result.exception)


# -- the ledger's rules, message by message --------------------------------------------------------------------


def seat(job: str, answers: list[dict[str, Any]]) -> Seat:
    return Seat(job, answers.append)


def test_a_free_slot_goes_to_the_job_holding_fewest_so_a_busy_job_does_not_starve_another():
    ledger = SweepLedger(SweepLimits(concurrency=4), jobs_at_once=2, spent=Spend())
    busy, quiet = [], []
    a, b = seat("a", busy), seat("b", quiet)
    for request in range(8):  # job a asks for eight slots first, then job b for two
        ledger.acquire(a, request, "url", 8)
    ledger.acquire(b, 0, "url", 8)
    ledger.acquire(b, 1, "url", 8)
    assert (len(busy), len(quiet)) == (4, 0)
    for _ in range(2):
        ledger.release(a, "url")
    assert (len(busy), len(quiet)) == (4, 2)  # the two freed slots went to b, who held none
    ledger.release(b, "url")
    assert (len(busy), len(quiet)) == (5, 2)


def test_a_rate_limit_met_by_one_job_halves_the_endpoints_limit_for_every_job_once():
    ledger = SweepLedger(SweepLimits(), jobs_at_once=2, spent=Spend())
    answers: list[dict[str, Any]] = []
    a, b = seat("a", answers), seat("b", answers)
    for request in range(4):
        ledger.acquire(a, request, "url", 2)  # unset --concurrency: two jobs of llm.concurrency 2 -> 4
    generation = answers[-1]["generation"]
    ledger.rate_limited("url", generation, None)
    ledger.rate_limited("url", generation, None)  # a burst of 429s for requests sent together halves once
    for _ in range(4):
        ledger.release(a, "url")
    for request in range(4):
        ledger.acquire(b, request, "url", 2)
    assert len(answers) == 4 + 2 and answers[-1]["generation"] == generation + 1


def test_after_a_burst_of_grants_the_limit_comes_back_to_what_the_endpoint_took_not_to_where_it_had_climbed():
    ledger = SweepLedger(SweepLimits(concurrency=16), jobs_at_once=4, spent=Spend())
    answers: list[dict[str, Any]] = []
    jobs = [seat(f"j{k}", answers) for k in range(4)]
    for request in range(32):
        ledger.acquire(jobs[request % 4], request, "url", 8)
    assert len(answers) == 16  # all of the limit at once; the endpoint takes 8 and refuses the rest
    generation = answers[0]["generation"]
    for k in range(8):  # each refusal is told, then its slot given back; the first halves the limit (to 8)
        ledger.rate_limited("url", generation, None)
        ledger.release(jobs[k % 4], "url")
    assert len(answers) == 16  # the 8 still out fill the halved limit
    for k in range(8, 16):  # those 8 succeed: the limit regains a slot each, but only up to the 8 the endpoint took
        ledger.succeeded("url")
        ledger.release(jobs[k % 4], "url")
    assert len(answers) == 16 + 8 and ledger.endpoints["url"].in_flight == 8


def test_a_retry_after_holds_every_jobs_requests():
    ledger = SweepLedger(SweepLimits(concurrency=4), jobs_at_once=2, spent=Spend())
    answers: list[dict[str, Any]] = []
    a, b = seat("a", answers), seat("b", answers)
    for request in range(4):
        ledger.acquire(a, request, "url", 4)
    held = ledger.rate_limited("url", answers[-1]["generation"], 60.0)
    for _ in range(4):
        ledger.release(a, "url")
    ledger.acquire(b, 0, "url", 4)
    assert 59 < held <= 60 and len(answers) == 4  # b's request waits although the halved limit has room


def test_the_budget_admits_what_fits_with_the_dearest_reply_reserved_for_each_request_in_flight():
    ledger = SweepLedger(SweepLimits(max_usd=1.0), jobs_at_once=1, spent=Spend(usd=0.5))
    answers: list[dict[str, Any]] = []
    job = seat("a", answers)
    for request in range(5):
        ledger.acquire(job, request, "url", 8)
    assert len(answers) == 1  # a reply's cost is not known yet: the first request goes alone
    ledger.charge(0.1, 15)
    ledger.release(job, "url")
    assert len(answers) == 1 + 4  # $0.6 spent: four more at up to $0.1 each fit in $1
    for _ in range(3):
        ledger.charge(0.1, 15)
        ledger.release(job, "url")
    ledger.acquire(job, 5, "url", 8)
    assert len(answers) == 5 and ledger.budget_refusal() is None  # $0.9 spent and one in flight: it waits
    ledger.charge(0.1, 15)
    ledger.release(job, "url")
    assert answers[-1]["refused"].startswith("the sweep's budget is spent: $1.0000 of --max-usd 1")
    assert ledger.budget_refusal() is not None


def test_a_job_that_dies_gives_back_its_slots_and_its_waiting_requests():
    ledger = SweepLedger(SweepLimits(concurrency=1), jobs_at_once=2, spent=Spend())
    answers: list[dict[str, Any]] = []
    dying, other = seat("a", answers), seat("b", answers)
    ledger.acquire(dying, 0, "url", 1)
    ledger.acquire(dying, 1, "url", 1)
    ledger.acquire(other, 0, "url", 1)
    ledger.leave(dying)
    assert [(a["id"], "generation" in a) for a in answers] == [(0, True), (0, True)]
    assert ledger.in_flight == 1


@pytest.mark.slow
def test_a_job_given_a_bad_ledger_address_says_so_in_one_line(tmp_path):
    data = write_problems(tmp_path / "problems.jsonl", PROBLEMS)
    config = tmp_path / "config.yaml"
    config.write_text(f"name: c\ntask: {{name: math, path: {data}}}\nagent: {{model: m}}\noptimizer: {{model: m}}\n")
    [job] = plan_sweep([config], tmp_path / "out", None, [])
    worker = subprocess.run([sys.executable, "-m", "agenttrain.sweeping.worker", json.dumps(job.to_dict())],
                            env={**os.environ, "AGENTTRAIN_SWEEP_LEDGER": "nowhere"}, capture_output=True, text=True)
    assert worker.returncode == 1
    assert worker.stderr.splitlines() == [
        "error: $AGENTTRAIN_SWEEP_LEDGER='nowhere': not a sweep ledger's address (unix:PATH#TOKEN or "
        "tcp:HOST:PORT#TOKEN); it is set by `agenttrain sweep` for its jobs only"]
