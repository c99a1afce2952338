"""`export --format package`: the functions as an installable package, with regression tests from training.

The package needs nothing from agenttrain: its module is `export --format python`'s, and its tests call the
functions in-process and compare what they give back with what the agent saw in training (cases.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from agenttrain.packaging.cases import regression_cases
from agenttrain.packaging.folders import (
    ExportedFolder,
    declared_dependencies,
    names,
    origin,
    render,
    toml_list,
    write_folder,
)
from agenttrain.readback.exporting import python_module, snapshot_origin
from agenttrain.rundir.directory import RunDir, Snapshot


def write_package(run: RunDir, snapshot: Snapshot, out: Path) -> ExportedFolder:
    dist, module = names(run.experiment().name, "functions")
    functions, where = snapshot.functions, origin(snapshot)
    found = regression_cases(functions, snapshot.rollouts())
    listed = ", ".join(f"`{name}`" for name in functions.names) or "no functions"
    files = {
        "pyproject.toml": render("package_pyproject.toml", dist=dist, module=module, origin=where,
                                 dependencies=toml_list(declared_dependencies(functions))),
        "README.md": render("package_README.md", dist=dist, module=module, origin=where, names=listed,
                            first=(functions.names or ["..."])[0], count=str(len(found.cases)), note=found.note()),
        f"{module}/__init__.py": python_module(functions, snapshot_origin(snapshot)),
        "tests/test_regression.py": render("package_test.py", module=module, origin=where, note=found.note(),
                                           names_list=json.dumps(functions.names)),
        "tests/regression_cases.json": json.dumps([c.to_json() for c in found.cases], indent=2,
                                                  ensure_ascii=False) + "\n",
    }
    write_folder(out, files)
    return ExportedFolder(out, dist, module, snapshot, cases=len(found.cases),
                          notes=[] if not found.skipped else [found.note()])
