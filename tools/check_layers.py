"""The import graph's rules, checked over `ast` (run by `make lint`):

1. No import cycles between modules (every import counts: top-level, inside functions, and under TYPE_CHECKING).
2. Every import goes down: a unit (a package or a module directly under agenttrain/) imports only from units on
   a lower floor, or from itself. The floors are the `layers` block of docs/architecture.md, read from there,
   so the page cannot drift from the code.
3. Every unit is on a floor.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "agenttrain"
DOC = ROOT / "docs" / "architecture.md"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The agenttrain modules `path` imports (a `from package import name` that names a module counts as it)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != this}


def unit_of(module: str) -> str:
    return module.split(".")[1] if module.count(".") else module


def read_layers() -> list[list[str]]:
    match = re.search(r"```text\n# layers.*?\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    if not match:
        sys.exit(f"{DOC}: no ```text block starting with '# layers'")
    floors = []
    for line in match.group(1).splitlines():
        line = line.split("#")[0].strip()
        if line:
            floors.append([name.strip("/ ") for name in line.split(":", 1)[-1].split()])
    return list(reversed(floors))  # the page draws the top floor first


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def main() -> int:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    graph = {module_name(p): imports_of(p, modules) for p in paths}
    problems = []
    if cycle := find_cycle(graph):
        problems.append("import cycle: " + " -> ".join(cycle))
    floor = {unit: level for level, units in enumerate(read_layers()) for unit in units}
    units = {unit_of(m) for m in modules if m != "agenttrain"}
    problems += [f"{unit}: on no floor of {DOC.relative_to(ROOT)}" for unit in sorted(units - floor.keys())]
    problems += [f"{unit}: on a floor of {DOC.relative_to(ROOT)} but not in agenttrain/"
                 for unit in sorted(floor.keys() - units)]
    for module, targets in sorted(graph.items()):
        if module == "agenttrain":
            continue
        for target in sorted(targets):
            a, b = unit_of(module), unit_of(target)
            if a != b and a in floor and b in floor and floor[b] >= floor[a]:
                problems.append(f"{module} imports {target}: {b} is not below {a}")
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
