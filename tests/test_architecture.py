"""The package layering of docs/architecture.md holds: no import cycles, only downward imports, every package on
a floor. `make lint` runs the same check; this test shows that it catches what it should."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from tests.support.files import REPO


def checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_layers", REPO / "tools" / "check_layers.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_tree_has_no_cycle_and_no_upward_import(capsys):
    assert checker().main() == 0, capsys.readouterr().out


def test_a_cycle_is_found_and_named():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert checker().find_cycle(graph) == ["a", "b", "c", "a"]
    assert checker().find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_floors_are_read_from_the_architecture_page_top_floor_first():
    floors = checker().read_layers()
    assert floors[0] == ["errors", "names", "lazy", "forking", "stats", "gather", "untrusted", "wording"]
    assert floors[-1] == ["cli"]
