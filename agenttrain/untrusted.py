"""Reading text we did not write (model replies, code output, files from disk) without letting it crash us.

Two things in such text break code that handles ordinary text: nesting so deep that Python's recursive parsers
raise RecursionError or MemoryError instead of their usual error (a small model repeating `[` until max_tokens),
and lone UTF-16 surrogates, which JSON's `\\ud800` escape decodes to and which no UTF-8 encoder takes (every
request body, cache key, journal line and web page is UTF-8). The readers here turn the first into the parser's
own error and the second into U+FFFD, so the callers' existing error handling stays total.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

# Nesting of a JSON value or a Python expression that no tool argument, schema or function needs: deep enough for
# any real one, shallow enough for every recursive consumer (json.dumps, pydantic, compile) under Python's limit.
MAX_DEPTH = 100

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")
# what can put a surrogate into a parsed value: one already in the text, or an escape of one (JSON's and Python's)
_MAY_HOLD_SURROGATE = re.compile(r"[\ud800-\udfff]|\\u[dD][89a-fA-F]|\\U0000[dD][89a-fA-F]")


def scrub(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD, so that it encodes as UTF-8."""
    return _SURROGATE.sub(REPLACEMENT, text)


def scrub_json(value: Any) -> Any:
    """A JSON-like value with `scrub` applied to every string in it, keys included."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub_json(key): scrub_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub_json(item) for item in value)
    return value


def holds_surrogate(value: Any) -> bool:
    """Whether a string anywhere in a JSON-like value (keys included) holds a lone surrogate."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str) and _SURROGATE.search(item):
            return True
        if isinstance(item, dict):
            stack.extend([*item.keys(), *item.values()])
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def _depth(value: Any) -> int:
    """How deeply lists and dicts nest in `value` (0 for a scalar); counted without recursion, and only up to
    one level past MAX_DEPTH."""
    deepest, stack = 0, [(value, 1)]
    while stack and deepest <= MAX_DEPTH:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list | tuple) else None
        if children is not None:
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in children)
    return deepest


def too_deep(value: Any) -> bool:
    return _depth(value) > MAX_DEPTH


NESTED_TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"


def loads(text: str | bytes, *, strict: bool = True) -> Any:
    """`json.loads` that fails only with json.JSONDecodeError: also for nesting past MAX_DEPTH (or past what the
    parser's recursion allows), and with lone surrogates replaced by U+FFFD."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    try:
        value = json.loads(text, strict=strict)
    except (RecursionError, MemoryError):
        raise json.JSONDecodeError(NESTED_TOO_DEEP, text, 0) from None
    if too_deep(value):
        raise json.JSONDecodeError(NESTED_TOO_DEEP, text, 0)
    return scrub_json(value) if _MAY_HOLD_SURROGATE.search(text) else value


def parse_python(code: str, filename: str = "<code>") -> ast.Module:
    """`ast.parse` that fails only with SyntaxError: also for code nested too deeply for the parser, NUL bytes, and
    characters that are not valid Unicode (lone surrogates)."""
    try:
        return ast.parse(code, filename)
    except (RecursionError, MemoryError):
        raise SyntaxError("the code is nested too deeply to parse", (filename, 1, 1, None)) from None
    except ValueError as exc:  # NUL bytes (before Python 3.12), lone surrogates (UnicodeEncodeError)
        raise SyntaxError(f"the code holds a character Python cannot read ({exc})", (filename, 1, 1, None)) from None


def literal(text: str) -> Any:
    """`ast.literal_eval` (literals only, never code) that fails only with ValueError, and like `loads` for nesting."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise ValueError(str(exc) or type(exc).__name__) from None
    if too_deep(value):
        raise ValueError(NESTED_TOO_DEEP)
    return scrub_json(value) if _MAY_HOLD_SURROGATE.search(text) else value
