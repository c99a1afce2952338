"""`agenttrain export --format mcp|package`: an epoch's functions as a folder that installs with pip.

`mcp` (mcp_folder.py) is an MCP server that runs each call in agenttrain's sandbox; `package` (python_package.py)
is a plain package of the functions with regression tests generated from training (cases.py). folders.py holds
what both share: names, dependencies, templates, and writing the folder without touching an existing one.
"""

from __future__ import annotations

from pathlib import Path

from agenttrain.errors import UserError
from agenttrain.names import FOLDER_FORMATS
from agenttrain.packaging.folders import ExportedFolder
from agenttrain.packaging.mcp_folder import write_mcp_folder
from agenttrain.packaging.python_package import write_package
from agenttrain.rundir.directory import RunDir, Snapshot

__all__ = ["FOLDER_FORMATS", "ExportedFolder", "export_folder"]


def export_folder(run: RunDir, snapshot: Snapshot, fmt: str, out: Path) -> ExportedFolder:
    if fmt == "mcp":
        return write_mcp_folder(run, snapshot, out)
    if fmt == "package":
        return write_package(run, snapshot, out)
    raise UserError(f"--format {fmt!r}: a folder export is one of {', '.join(FOLDER_FORMATS)}")
