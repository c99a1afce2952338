"""What `serve` serves: the functions of one epoch of a run with the run's sandbox limits, or the same pair as
`export --format mcp` wrote them into a folder (functions.json, sandbox.json)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from agenttrain.config import SandboxConfig
from agenttrain.errors import UserError
from agenttrain.functions import FunctionSet
from agenttrain.rundir.directory import RunDir
from agenttrain.untrusted import loads

logger = logging.getLogger(__name__)
FUNCTIONS_FILE = "functions.json"
SANDBOX_FILE = "sandbox.json"  # the run's `sandbox` section, so an exported server enforces the training limits


@dataclass(frozen=True)
class Served:
    name: str  # the MCP server's name: the experiment's
    functions: FunctionSet
    sandbox: SandboxConfig
    origin: str  # what was loaded, for the start-up line


def is_exported(path: Path) -> bool:
    return (path / FUNCTIONS_FILE).is_file() and (path / SANDBOX_FILE).is_file()


def load_served(path: Path, epoch: str = "best") -> Served:
    """An exported folder as it is, else the run at `path` at `epoch` (best, N or epoch-N)."""
    served = _load_exported(path) if is_exported(path) else _load_run(path, epoch)
    if handed := [name for name in served.sandbox.env_allow if name in os.environ]:
        # the folder's settings decide; the user should know before a client calls anything
        logger.warning("%s: the functions' code gets %s from this environment (sandbox.env_allow)%s", served.origin,
                       ", ".join(f"${name}" for name in handed), ", with network access" if served.sandbox.network
                       else "")
    return served


def _load_run(path: Path, epoch: str) -> Served:
    run = RunDir.open(path)
    snapshot = run.snapshot(run.resolve_epoch(epoch))
    experiment = run.experiment()
    return Served(experiment.name, snapshot.functions, experiment.sandbox, f"{run.path.name} epoch {snapshot.epoch}")


def _load_exported(folder: Path) -> Served:
    try:
        # a folder someone handed over, read as untrusted: nesting past a sane depth is an error like any other
        functions = FunctionSet.from_json(loads((folder / FUNCTIONS_FILE).read_bytes()))
        settings = loads((folder / SANDBOX_FILE).read_bytes())
        sandbox = SandboxConfig.model_validate(settings.get("sandbox", settings))
        name, origin = str(settings.get("name", folder.name)), str(settings.get("origin", folder))
    except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
        raise UserError(f"{folder}: not a folder written by `agenttrain export --format mcp` ({exc})") from None
    return Served(name, functions, sandbox, origin)
