"""`agenttrain sweep --executor ray`: each job (train, then evaluate) as a Ray task, on whichever node has a CPU.

A task runs the job exactly as `LocalJobs` does, as `python -m agenttrain.sweeping.worker` in a child process of
the Ray worker, so reuse and resume behave the same. The sweep's folder (runs, logs) must be at the same path
on every node: a shared filesystem on a real cluster. RAY_ADDRESS picks the cluster; unset, a local Ray is
started for the sweep. The jobs reach the sweep's ledger over TCP at this node's cluster address.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

import ray

from agenttrain.endpoint.shared_limits import LedgerAddress
from agenttrain.sweeping.ledger import SweepLedger
from agenttrain.sweeping.ledger_server import LedgerServer, serving
from agenttrain.sweeping.plan import SweepJob
from agenttrain.sweeping.runners import JobDone, JobOutcome, LocalJobs, last_error, unaffordable
from agenttrain.training.executors.ray_cluster import ray_session

INTERRUPT_GRACE_S = 30.0


@ray.remote(num_cpus=1)
def run_job_process(job: SweepJob, log: Path, ledger: LedgerAddress) -> str | None:
    """Runs on a Ray worker; returns None when the job succeeded, else its error line. When the sweep is
    cancelled, the job gets SIGINT, so its run is saved as interrupted (resumable), as with Ctrl-C locally."""
    offset = log.stat().st_size if log.exists() else 0
    process = LocalJobs.start(job, log, ledger)
    try:
        code = process.wait()
    except KeyboardInterrupt:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(INTERRUPT_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
        raise
    return None if code == 0 else last_error(log, offset)


class RayJobs:
    def run(self, jobs: Sequence[SweepJob], parallel: int, logs: Path, on_done: JobDone, ledger: SweepLedger
            ) -> list[JobOutcome]:
        logs.mkdir(parents=True, exist_ok=True)
        with ray_session(os.environ.get("RAY_ADDRESS")), serving(ledger, ray.util.get_node_ip_address()) as server:
            return self._run(jobs, parallel, logs, on_done, server)

    @staticmethod
    def _run(jobs: Sequence[SweepJob], parallel: int, logs: Path, on_done: JobDone, server: LedgerServer
             ) -> list[JobOutcome]:
        waiting, outcomes = list(jobs), []
        running: dict[ray.ObjectRef, SweepJob] = {}
        try:
            while waiting or running:
                while waiting and len(running) < parallel:
                    job = waiting.pop(0)
                    if skipped := unaffordable(job, server):
                        outcomes.append(skipped)
                        on_done(skipped)
                        continue
                    running[run_job_process.remote(job, logs / f"{job.id}.log", server.address)] = job
                if not running:
                    break
                (finished,), _ = ray.wait(list(running), num_returns=1)
                job = running.pop(finished)
                try:
                    error = ray.get(finished)
                except ray.exceptions.RayError as exc:  # the worker or its node died: the run stays resumable
                    error = f"the Ray task died: {exc.__class__.__name__}; rerun the sweep to resume it"
                outcome = JobOutcome(job, error is None, error, logs / f"{job.id}.log")
                outcomes.append(outcome)
                on_done(outcome)
        finally:
            for ref in running:  # only left on an interrupt
                ray.cancel(ref)
            if running:
                ray.wait(list(running), num_returns=len(running), timeout=INTERRUPT_GRACE_S)
        return outcomes
