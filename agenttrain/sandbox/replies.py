"""What the trainer accepts from a sandbox worker: every field of a reply checked, bounded and made encodable.

The worker runs model code, which can write any reply it likes in its place (channel.py says how far that
goes). So a reply is data: one that is not what our worker sends (not JSON, too deep, wrong types, no such event)
is a `BadReply`, that call's recorded error; text is capped at `max_output_chars` here, whatever the worker
claimed; and lone surrogates, which no file or response can hold, are escaped.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from agenttrain.sandbox.isolation import Isolation
from agenttrain.sandbox.pool import WROTE_ON_CHANNEL, WorkerDied
from agenttrain.sandbox.worker import ERROR_CHARS, truncate, truncation_note

NOTE_CHARS = len(truncation_note(10**18))  # the worker's own truncation note, which a capped text may end with
MAX_NOTES = 100  # lines of an isolation report's notes


class BadReply(WorkerDied):
    """A reply our worker would not send, or the worker's report that its own code failed; the message says which."""


def max_reply_bytes(max_output_chars: int) -> int:
    """The largest reply body a worker sends: output and value of up to `max_output_chars` (and a note) plus an
    error, each character escaped by JSON as at most 12 bytes (a surrogate pair)."""
    return 12 * (2 * (max_output_chars + NOTE_CHARS) + ERROR_CHARS) + 4096


def result(body: bytes, max_output_chars: int) -> tuple[bool, str, str | None, str | None]:
    """(ok, output, error, value) of a `run`, `call` or `load` reply."""
    reply = _decode(body)
    if reply.get("event") != "result":
        raise BadReply(WROTE_ON_CHANNEL)
    ok, output, error, value = (reply.get(k) for k in ("ok", "output", "error", "value"))
    if not isinstance(ok, bool) or not isinstance(output, str) or not _optional_text(error, value):
        raise BadReply(WROTE_ON_CHANNEL)
    error_chars = min(max_output_chars, ERROR_CHARS)
    return (
        ok, _text(output, max_output_chars), None if error is None else _text(error, error_chars),
        None if value is None else _text(value, max_output_chars),
    )  # fmt: skip


def isolation(body: bytes) -> dict[str, Any]:
    """The worker's report of what confines it (sent before any model code ran, and checked all the same)."""
    report = _decode(body).get("isolation")
    if not isinstance(report, dict):
        raise BadReply(WROTE_ON_CHANNEL)
    checked = dataclasses.asdict(Isolation())
    for name, default in checked.items():
        value = report.get(name, default)
        if (isinstance(default, bool) and isinstance(value, bool)) or (
            name == "uid" and (value is None or type(value) is int)
        ):
            checked[name] = value
        elif isinstance(default, list) and isinstance(value, list) and all(isinstance(v, str) for v in value):
            checked[name] = [_text(v, ERROR_CHARS) for v in value[:MAX_NOTES]]
        else:
            raise BadReply(WROTE_ON_CHANNEL)
    return checked


def _decode(body: bytes) -> dict[str, Any]:
    try:
        reply = json.loads(body)
    except (ValueError, RecursionError):  # not JSON (or not UTF-8), or nested past what the parser allows
        raise BadReply(WROTE_ON_CHANNEL) from None
    if not isinstance(reply, dict):
        raise BadReply(WROTE_ON_CHANNEL)
    if reply.get("event") == "failed":  # our worker's last words: the code it ran broke it
        error = reply.get("error")
        last_line = error.strip().splitlines()[-1] if isinstance(error, str) and error.strip() else "no reason"
        raise BadReply(f"the code broke the sandbox worker ({_text(last_line, ERROR_CHARS)})")
    return reply


def _optional_text(*values: object) -> bool:
    return all(v is None or isinstance(v, str) for v in values)


def _text(text: str, limit: int) -> str:
    """`text` within `limit` characters (and the worker's note, if it truncated), encodable as UTF-8."""
    if len(text) > limit + NOTE_CHARS:
        text = truncate(text, limit)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: a return value or a forged reply may hold them
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
