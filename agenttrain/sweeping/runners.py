"""Where sweep jobs run. A `JobRunner` takes the jobs and runs each one somewhere, at most `parallel` at a time,
reporting every job as it ends, and serves them the sweep's ledger (ledger.py) where they can reach it. `LocalJobs`
runs each job as a child process of this machine; `RayJobs` (ray_jobs.py) as a Ray task. `sweep --executor NAME`
picks one from `sweeping.JOB_RUNNERS`. Once the sweep's budget is spent, jobs not started yet are not started.

Local jobs fork their scorer processes from one template the sweep starts (agenttrain.scorers.runner), so that each
job does not spend seconds of CPU importing the scorers again; on a small machine that CPU is what a sweep of short
runs waits for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agenttrain.config import ConfigError
from agenttrain.endpoint.shared_limits import LEDGER_ENV, LedgerAddress
from agenttrain.forking import ForkServer, ForkServerError
from agenttrain.scorers.in_process import runs_in_process
from agenttrain.scorers.runner import TEMPLATE_ENV, start_template
from agenttrain.sweeping.ledger import SweepLedger
from agenttrain.sweeping.ledger_server import LedgerServer, serving
from agenttrain.sweeping.plan import SweepJob

POLL_S = 0.2


@dataclass(frozen=True)
class JobOutcome:
    job: SweepJob
    ok: bool
    error: str | None = None  # the worker's last error line when it failed
    log: Path | None = None  # what the worker printed


JobDone = Callable[[JobOutcome], None]


class JobRunner(Protocol):
    def run(self, jobs: Sequence[SweepJob], parallel: int, logs: Path, on_done: JobDone, ledger: SweepLedger
            ) -> list[JobOutcome]:
        """Run every job (each is independent), at most `parallel` at once, each spending from `ledger`; call
        `on_done` as each one ends."""
        ...


def unaffordable(job: SweepJob, server: LedgerServer) -> JobOutcome | None:
    """The job's outcome when the sweep's budget is spent before it starts: not started, saying why."""
    spent = server.budget_spent()
    return None if spent is None else JobOutcome(job, False, spent)


def last_error(log: Path, offset: int) -> str:
    """The worker's error line, from what it wrote after `offset` (a log keeps the output of earlier sweeps)."""
    with open(log, "rb") as handle:
        handle.seek(offset)
        text = handle.read().decode("utf-8", errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["the worker exited without a message"])[-1].removeprefix("error: ")


class LocalJobs:
    """One child process per job (`python -m agenttrain.sweeping.worker`), its output in LOGS/<job id>.log. On
    Ctrl-C the children, in the same process group, stop too: their runs are left resumable."""

    def run(self, jobs: Sequence[SweepJob], parallel: int, logs: Path, on_done: JobDone, ledger: SweepLedger
            ) -> list[JobOutcome]:
        logs.mkdir(parents=True, exist_ok=True)
        with serving(ledger) as server, scorer_template(jobs) as scorers:
            return self._run(jobs, parallel, logs, on_done, server, scorers)

    def _run(self, jobs: Sequence[SweepJob], parallel: int, logs: Path, on_done: JobDone, server: LedgerServer,
             scorers: ForkServer | None) -> list[JobOutcome]:
        waiting, outcomes = list(jobs), []
        running: dict[str, tuple[SweepJob, subprocess.Popen[bytes], int]] = {}  # id -> job, process, log offset
        try:
            while waiting or running:
                while waiting and len(running) < parallel:
                    job = waiting.pop(0)
                    if skipped := unaffordable(job, server):
                        outcomes.append(skipped)
                        on_done(skipped)
                        continue
                    log = logs / f"{job.id}.log"
                    offset = log.stat().st_size if log.exists() else 0
                    running[job.id] = (job, self.start(job, log, server.address, scorers), offset)
                for job_id, (job, process, offset) in list(running.items()):
                    if process.poll() is None:
                        continue
                    del running[job_id]
                    log = logs / f"{job.id}.log"
                    error = None if process.returncode == 0 else last_error(log, offset)
                    outcome = JobOutcome(job, process.returncode == 0, error, log)
                    outcomes.append(outcome)
                    on_done(outcome)
                time.sleep(POLL_S)
        finally:
            for _, process, _ in running.values():  # only left on an interrupt: let each save its run and exit
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
        return outcomes

    @staticmethod
    def start(job: SweepJob, log: Path, ledger: LedgerAddress, scorers: ForkServer | None = None
              ) -> subprocess.Popen[bytes]:
        """The job's worker process, appending its output to `log` (RayJobs starts jobs the same way), forking its
        scorer processes from `scorers` when given."""
        env = {**os.environ, LEDGER_ENV: str(ledger)}
        if scorers is not None:
            env[TEMPLATE_ENV] = str(scorers.control_fd)
        with open(log, "ab") as handle:
            return subprocess.Popen([sys.executable, "-m", "agenttrain.sweeping.worker", json.dumps(job.to_dict())],
                                    stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    pass_fds=() if scorers is None else (scorers.control_fd,))


@contextmanager
def scorer_template(jobs: Sequence[SweepJob]) -> Iterator[ForkServer | None]:
    """The scorer template the jobs fork their scorer processes from, warmed with the first job's scorer; None when
    it scores in this process's threads (a Python function) or the template cannot start (each job starts its own)."""
    from agenttrain.tasks import load_task

    template = None
    try:
        scorer = load_task(jobs[0].experiment().task).scorer if jobs else None
        if scorer is not None and not runs_in_process(scorer):
            template = start_template(scorer)
    except (ConfigError, ForkServerError):  # the job reports a config problem itself
        template = None
    try:
        yield template
    finally:
        if template is not None:
            template.close()
