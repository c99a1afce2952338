"""Cyclomatic complexity (McCabe) of a learned function's code, counted with the standard library's `ast`.

One plus the number of decision points: `if`/`elif`, conditional expressions, loops, `except` clauses,
`match` cases, each extra operand of `and`/`or`, and each `for` and `if` inside a comprehension. Helper
functions defined in the same code count toward it: the optimizer wrote them as one unit.
"""

from __future__ import annotations

import ast

from agenttrain.untrusted import parse_python

_ONE_BRANCH = (ast.If, ast.IfExp, ast.For, ast.AsyncFor, ast.While, ast.ExceptHandler, ast.match_case)


def _decision_points(node: ast.AST) -> int:
    if isinstance(node, _ONE_BRANCH):
        return 1
    if isinstance(node, ast.BoolOp):
        return len(node.values) - 1
    if isinstance(node, ast.comprehension):
        return 1 + len(node.ifs)
    return 0


def cyclomatic_complexity(code: str) -> int:
    """Raises SyntaxError when `code` does not parse (nested too deeply included)."""
    return 1 + sum(_decision_points(node) for node in ast.walk(parse_python(code)))
