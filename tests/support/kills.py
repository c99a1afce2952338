"""Killing a training process at any write, and what a run's results are, to compare a killed-then-resumed run
with an undisturbed one."""

from __future__ import annotations

import json
from typing import Any

from agenttrain.rundir.directory import RunDir

# Imports the CLI once, then for k = 1, 2, ... (or 1, 1 + STRIDE, ...) forks a `train` that an audit hook
# SIGKILLs at its k-th write under its output folder (every file opened for writing, renamed or made there), and
# forks a `train --resume` of what it left; it stops at the first k the run completes before. Forking saves an
# import per process. Arguments: CONFIG ROOT [STRIDE].
KILL_AT_EVERY_WRITE = """
import json, os, signal, sys
from pathlib import Path
from agenttrain.cli import main

WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
config, root = sys.argv[1], Path(sys.argv[2])
stride = int(sys.argv[3]) if len(sys.argv) > 3 else 1

def kill_at_write(limit, under):
    me, seen = os.getpid(), [0]
    def hook(event, args):
        opened = event == "open" and isinstance(args[0], str) and args[2] & WRITING
        if (opened or event in ("os.rename", "os.mkdir")) and os.getpid() == me and str(args[0]).startswith(under):
            seen[0] += 1
            if seen[0] == limit:
                os.kill(me, signal.SIGKILL)
    sys.addaudithook(hook)

def cli(argv, kill_at=None, under=""):
    pid = os.fork()
    if pid == 0:
        if kill_at:
            kill_at_write(kill_at, under)
        sys.argv = ["agenttrain", *argv]
        try:
            main()
        except SystemExit as exc:
            os._exit(exc.code if isinstance(exc.code, int) else 1)
        os._exit(0)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

for k in range(1, 1000, stride):
    out = root / f"killed-{k}"
    code = cli(["train", config, "--set", f"output_dir={out}"], k, str(out))
    if code != -signal.SIGKILL:
        print(json.dumps({"completed_at": k, "code": code}))
        break
    runs = [p for p in out.iterdir() if (p / "run.json").exists()] if out.exists() else []
    if runs:  # else it was killed before run.json existed: no run to resume, and none is listed
        assert cli(["train", "--resume", str(runs[0])]) == 0, k
"""


def comparable(run: RunDir) -> dict[str, Any]:
    """What a run's results are: every snapshot (without timings and spending), the best epoch, the ending."""
    epochs = {}
    for epoch in run.epochs():
        snapshot = run.snapshot(epoch)
        metrics = snapshot.metrics.model_dump(exclude={"usage", "duration_s"})
        epochs[epoch] = {"functions": snapshot.functions.to_json(), "metrics": metrics,
                         "rollouts": snapshot.rollouts(), "val_rollouts": snapshot.val_rollouts()}
    info = run.info()
    return {"epochs": epochs, "best.json": json.loads((run.path / "best.json").read_text()),
            "best": run.best_if_any(), "status": info.status, "reason": info.reason}


def leftovers(run: RunDir) -> list[str]:
    return sorted(p.name for p in run.path.iterdir() if p.name.startswith(".") and p.name != ".lock")
