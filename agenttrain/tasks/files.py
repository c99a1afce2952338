"""Reading task files: JSONL (one record a line) and JSON, with errors that name the file and the line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agenttrain.tasks.base import DataError
from agenttrain.untrusted import loads

TEXT_ENCODING = "utf-8-sig"  # UTF-8, tolerating the byte-order mark some editors write


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for every non-blank line."""
    try:
        lines = path.read_text(encoding=TEXT_ENCODING).splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = loads(line)  # a lone surrogate escape becomes U+FFFD; nesting past a sane depth is an error
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({exc.msg}); fix or delete that line") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: expected a JSON object per line")
        yield number, record


def read_json(path: Path) -> Any:
    try:
        return loads(path.read_text(encoding=TEXT_ENCODING))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None


def require_field(record: dict[str, Any], name: str, where: str) -> Any:
    if record.get(name) in (None, ""):
        raise DataError(f"{where}: missing field {name!r} (fields present: {sorted(record)})")
    return record[name]
