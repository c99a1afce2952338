"""`export --format mcp`: a folder that pip installs as an MCP server of the functions.

The server is agenttrain's own (`agenttrain serve` on the folder), so the exported functions run in the same
sandbox, sealed and limited as in training, on any machine the folder is copied to: the folder depends on
`agenttrain[mcp]` rather than carrying an unsandboxed copy of the server.
"""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

from agenttrain.packaging.folders import (
    ExportedFolder,
    declared_dependencies,
    names,
    origin,
    render,
    toml_list,
    write_folder,
)
from agenttrain.rundir.directory import RunDir, Snapshot
from agenttrain.serving.source import FUNCTIONS_FILE, SANDBOX_FILE


def write_mcp_folder(run: RunDir, snapshot: Snapshot, out: Path) -> ExportedFolder:
    experiment = run.experiment()
    dist, module = names(experiment.name, "mcp")
    functions, where = snapshot.functions, origin(snapshot)
    sandbox = experiment.sandbox
    limits = (f"{sandbox.timeout_s:g} s per call, {sandbox.memory_mb} MB, network "
              f"{'allowed' if sandbox.network else 'off'}; see {module}/{SANDBOX_FILE}")
    files = {
        "pyproject.toml": render("mcp_pyproject.toml", dist=dist, module=module, script=dist, origin=where,
                                 dependencies=toml_list([f"agenttrain[mcp]>={version('agenttrain')}",
                                                         *declared_dependencies(functions)])),
        "README.md": render("mcp_README.md", dist=dist, script=dist, name=experiment.name, origin=where,
                            limits=limits, tool_list="\n".join(f"- `{f.name}`: {f.description}" for f in functions)
                            or "(none: the epoch has no functions)"),
        f"{module}/__init__.py": f'"""MCP server of the functions agenttrain learned ({where})."""\n',
        f"{module}/server.py": render("mcp_server.py", origin=where),
        f"{module}/{FUNCTIONS_FILE}": json.dumps(functions.to_json(), indent=2, ensure_ascii=False) + "\n",
        f"{module}/{SANDBOX_FILE}": json.dumps({"name": experiment.name, "origin": where,
                                                "sandbox": sandbox.model_dump(mode="json")}, indent=2) + "\n",
    }
    write_folder(out, files)
    return ExportedFolder(out, dist, module, snapshot, script=dist)
