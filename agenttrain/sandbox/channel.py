"""The private channels of a sandbox session: framed messages over Unix socket pairs.

    trainer ──trainer channel── supervisor ──worker channel── worker (runs the model's code)

The trainer's channel ends in the session's supervisor (supervisor.py), which runs no model code. The worker, and
all the code it runs, holds only the worker channel. Whatever that code writes there reaches the trainer only as
the supervisor relays it: at most one reply per request, with that request's id, bounded in size, tagged as the
worker's; the trainer then checks every field of it (replies.py). The supervisor's own reports (ready, exit) carry
a tag the worker cannot put on a frame. So no key is needed: the code could read any key its own process holds,
and no process but the two ends holds either socket. Both ends are close-on-exec and never descriptors 0-2, so
prints and subprocesses never touch them.

A frame is a header (body length, tag, request id) and a body. Standard library only: it runs in the sandbox.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

HEADER = struct.Struct("!IcI")  # body length, tag, id of the request it answers (0: none)
FROM_TRAINER, FROM_WORKER, FROM_SUPERVISOR = b"T", b"W", b"S"
MAX_REQUEST_BYTES = 1 << 26  # the trainer's requests (code, arguments) are ours; this bounds a broken frame only


class BadFrame(Exception):
    """A frame whose header is impossible or whose body is larger than its reader accepts."""


def frame(tag: bytes, request_id: int, body: bytes) -> bytes:
    return HEADER.pack(len(body), tag, request_id) + body


def message_frame(tag: bytes, request_id: int, message: dict[str, Any]) -> bytes:
    return frame(tag, request_id, json.dumps(message).encode())


def parse_header(header: bytes, max_body_bytes: int) -> tuple[int, bytes, int]:
    """(body length, tag, request id); raises BadFrame past `max_body_bytes`."""
    length, tag, request_id = HEADER.unpack(header)
    if length > max_body_bytes:
        raise BadFrame(f"a frame of {length} bytes (at most {max_body_bytes} accepted)")
    return length, tag, request_id


def read_frame(connection: socket.socket, max_body_bytes: int) -> tuple[bytes, int, bytes] | None:
    """(tag, request id, body) of the next frame, blocking; None once the other end has closed."""
    header = _read(connection, HEADER.size)
    if header is None:
        return None
    length, tag, request_id = parse_header(header, max_body_bytes)
    body = _read(connection, length)
    return None if body is None else (tag, request_id, body)


def _read(connection: socket.socket, size: int) -> bytes | None:
    data = bytearray()
    while len(data) < size:
        chunk = connection.recv(min(size - len(data), 1 << 20))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


class Endpoint:
    """The worker's (blocking) end of the worker channel."""

    def __init__(self, connection: socket.socket) -> None:
        connection.set_inheritable(False)
        self._socket = connection
        self.request_id = 0  # of the request being served: its reply carries it

    def send(self, message: dict[str, Any]) -> None:
        self._socket.sendall(message_frame(FROM_WORKER, self.request_id, message))

    def receive(self) -> dict[str, Any] | None:
        """The next request; None once the supervisor has closed its end."""
        received = read_frame(self._socket, MAX_REQUEST_BYTES)
        if received is None:
            return None
        _, self.request_id, body = received
        message: dict[str, Any] = json.loads(body)
        return message
