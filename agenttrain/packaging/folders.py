"""What the folder exports share: the names a run's folder gets, its dependencies, the templates, and writing it
beside its destination, then renaming, so that a failed export leaves nothing and an existing folder is kept."""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from agenttrain.errors import UserError
from agenttrain.functions import FunctionSet
from agenttrain.rundir.directory import Snapshot, write_error

TEMPLATES = Path(__file__).parent / "templates"
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclass(frozen=True)
class ExportedFolder:
    path: Path
    dist: str  # the name pip knows it by
    module: str  # the name Python imports
    snapshot: Snapshot
    script: str | None = None  # the console script that starts the server
    cases: int | None = None  # regression cases written
    notes: list[str] = field(default_factory=list)


def names(run_name: str, suffix: str) -> tuple[str, str]:
    """The names pip and Python know the folder by: `math-algebra` -> `math-algebra-mcp`, `math_algebra_mcp`."""
    slug = re.sub(r"[^a-z0-9]+", "-", run_name.lower()).strip("-") or "learned"
    if slug[0].isdigit():
        slug = f"run-{slug}"
    dist = f"{slug}-{suffix}"
    return dist, dist.replace("-", "_")


def declared_dependencies(functions: FunctionSet) -> list[str]:
    """The packages the functions declared, less the standard library's modules (`fractions`, `math`)."""
    found = []
    for package in sorted({p for f in functions for p in f.packages}):
        match = _REQUIREMENT_NAME.match(package)
        top = (match.group(1) if match else package).split(".")[0].replace("-", "_")
        if top not in sys.stdlib_module_names:
            found.append(package)
    return found


def toml_list(items: list[str]) -> str:
    return json.dumps(items)  # a JSON list of strings is a TOML array


def origin(snapshot: Snapshot) -> str:
    return f"run {snapshot.path.parent.name}, epoch {snapshot.epoch}"


def render(template: str, **values: str) -> str:
    return Template((TEMPLATES / f"{template}.tmpl").read_text(encoding="utf-8")).substitute(values)


def check_destination(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out}: already exists and is not an empty folder; give a new folder name "
                        "(an export never writes over existing files)")


def write_folder(out: Path, files: dict[str, str]) -> None:
    """`files` (relative path -> text) as the folder `out`, which appears complete or not at all."""
    check_destination(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for relative, text in files.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        staging.chmod(0o755)
        if out.exists():
            out.rmdir()  # empty, checked above
        staging.rename(out)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise write_error(out, exc) from None
