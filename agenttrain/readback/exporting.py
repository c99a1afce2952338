"""Learned functions out of a run, for use elsewhere: a standalone Python module, OpenAI tools, or functions.json."""

from __future__ import annotations

import ast
import json

from agenttrain.errors import UserError
from agenttrain.functions import FunctionSet
from agenttrain.names import FOLDER_FORMATS
from agenttrain.rundir.directory import Snapshot
from agenttrain.untrusted import parse_python

EXPORT_FORMATS = ("python", "openai-tools", "json")
INDENT_STEP = "    "


def _top_level_def(tree: ast.Module, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    return next(
        (n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == name), None
    )


def _leading_whitespace(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _docstring_literal(text: str, indent: str) -> str:
    """A string literal holding `text`, laid out as a docstring at `indent`."""
    if "\\" in text or '"""' in text or text.endswith('"'):
        return repr(text)  # escapes keep any text a valid literal; rare enough not to need pretty layout
    first, *rest = text.splitlines()
    if not rest:
        return f'"""{first}"""'
    body = "\n".join(indent + line if line.strip() else "" for line in rest)
    return f'"""{first}\n{body}\n{indent}"""'


def add_docstring(code: str, name: str, text: str) -> str:
    """`code` with `text` as the docstring of its top-level `def name`; unchanged if it has one already.

    Works on the source lines rather than unparsing the tree, so the author's comments and layout survive.
    """
    text = text.strip()
    node = _top_level_def(parse_python(code), name)
    if not text or node is None or ast.get_docstring(node) is not None:
        return code
    lines = code.splitlines(keepends=True)
    first = node.body[0]
    start = min([first.lineno, *(d.lineno for d in getattr(first, "decorator_list", []))])
    line = lines[start - 1]
    column = len(line.encode()[: first.col_offset].decode())  # ast columns count UTF-8 bytes
    if line[:column].strip():  # the body starts on the signature line: `def f(x): return x`
        indent = _leading_whitespace(lines[node.lineno - 1]) + INDENT_STEP
        head, body = line[:column].rstrip(), line[column:]
        lines[start - 1] = f"{head}\n{indent}{_docstring_literal(text, indent)}\n{indent}{body}"
    else:
        indent = _leading_whitespace(line)
        lines.insert(start - 1, f"{indent}{_docstring_literal(text, indent)}\n")
    return "".join(lines)


def _top_level_definitions(code: str) -> dict[str, str]:
    """Names that a function's code binds at module level (imports aside), with the source that binds them."""
    tree = parse_python(code)
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            continue
        targets = [node] if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) else [
            t for t in ast.walk(node) if isinstance(t, ast.Name) and isinstance(t.ctx, ast.Store)]
        for target in targets:
            name = target.id if isinstance(target, ast.Name) else target.name
            found[name] = ast.get_source_segment(code, node) or ""
    return found


def check_no_clashes(functions: FunctionSet) -> None:
    """In training each function's code has its own globals; one module shares them, so two functions that
    define the same helper differently would change each other's behaviour. Refuse rather than export that."""
    seen: dict[str, tuple[str, str]] = {}
    for function in functions:
        for name, source in _top_level_definitions(function.code).items():
            if name in seen and seen[name][1] != source:
                raise UserError(
                    f"functions {seen[name][0]!r} and {function.name!r} both define a different top-level "
                    f"{name!r}; one Python module would make them share it. Export with --format json or "
                    "openai-tools, or rename the helper in one of them"
                )
            seen.setdefault(name, (function.name, source))


def python_module(functions: FunctionSet, origin: str) -> str:
    """A module that needs nothing from agenttrain: each function's code with its description as docstring."""
    check_no_clashes(functions)
    packages = sorted({p for f in functions for p in f.packages})
    header = [
        f"# Functions learned by agenttrain ({origin}).",
        "# Standalone: importing this module needs only the packages below, not agenttrain.",
        f"# Packages: {', '.join(packages) if packages else 'none beyond the standard library'}",
        "",
        f'"""Learned functions: {", ".join(functions.names) or "none"}."""',
        "",
        f"__all__ = {json.dumps(functions.names)}",  # a JSON list of strings is also a Python list
    ]
    bodies = [add_docstring(f.code, f.name, f.description).strip() for f in functions]
    return "\n\n\n".join(["\n".join(header), *bodies]) + "\n"


def snapshot_origin(snapshot: Snapshot) -> str:
    accuracy = snapshot.metrics.train_accuracy
    return f"run {snapshot.path.parent.name}, epoch {snapshot.epoch}, train accuracy {accuracy:.3f}"


def export_snapshot(snapshot: Snapshot, fmt: str) -> str:
    """The text of one export in one of EXPORT_FORMATS; JSON ends with a newline like the files a run writes."""
    if fmt == "python":
        try:
            return python_module(snapshot.functions, snapshot_origin(snapshot))
        except SyntaxError as exc:  # a functions.json agenttrain did not write: its code was checked when saved
            raise UserError(f"{snapshot.path / 'functions.json'}: a function's code does not parse ({exc.msg}); "
                            "export with --format json instead") from None
    if fmt == "openai-tools":
        return json.dumps(snapshot.functions.to_openai_tools(), indent=2, ensure_ascii=False) + "\n"
    if fmt == "json":
        return json.dumps(snapshot.functions.to_json(), indent=2, ensure_ascii=False) + "\n"
    raise UserError(f"--format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS + FOLDER_FORMATS)}")
