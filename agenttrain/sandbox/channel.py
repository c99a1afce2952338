"""The private reply channel between the trainer and a sandbox worker: framed, authenticated messages.

One Unix socket pair per worker. The worker's end is never one of descriptors 0-2 and is close-on-exec, so
prints, `os.close(1)` and subprocesses never touch it. A frame is a 4-byte length, an HMAC-SHA256 of the body
under a key made for that worker, and a JSON body. Code that finds the descriptor anyway can only write
frames that fail the check: the trainer then ends that worker, an error of the rollout, never of the run.
Standard library only: the worker side runs in the sandbox.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import struct
from typing import Any

LENGTH = struct.Struct("!I")
MAC_BYTES = hashlib.sha256().digest_size
MAX_FRAME_BYTES = 1 << 26  # output is truncated worker-side; this only bounds a pathological frame


class ForgedFrame(Exception):
    """A frame that is too long or whose authentication code does not match: not written by our code."""


def encode(key: bytes, message: dict[str, Any]) -> bytes:
    body = json.dumps(message).encode()
    return LENGTH.pack(MAC_BYTES + len(body)) + hmac.digest(key, body, "sha256") + body


def frame_length(header: bytes) -> int:
    (length,) = LENGTH.unpack(header)
    if not MAC_BYTES <= length <= MAX_FRAME_BYTES:
        raise ForgedFrame(f"a frame of {length} bytes")
    return length


def decode(key: bytes, frame: bytes) -> dict[str, Any]:
    mac, body = frame[:MAC_BYTES], frame[MAC_BYTES:]
    if not hmac.compare_digest(mac, hmac.digest(key, body, "sha256")):
        raise ForgedFrame("a frame with a wrong authentication code")
    return json.loads(body)


class Endpoint:
    """The worker's (blocking) end of the channel."""

    def __init__(self, connection: socket.socket, key: bytes) -> None:
        connection.set_inheritable(False)
        self._socket = connection
        self._key = key

    def send(self, message: dict[str, Any]) -> None:
        self._socket.sendall(encode(self._key, message))

    def receive(self) -> dict[str, Any] | None:
        """The next request; None once the trainer has closed its end."""
        header = self._read(LENGTH.size)
        if header is None:
            return None
        frame = self._read(frame_length(header))
        return None if frame is None else decode(self._key, frame)

    def _read(self, size: int) -> bytes | None:
        data = bytearray()
        while len(data) < size:
            chunk = self._socket.recv(size - len(data))
            if not chunk:
                return None
            data += chunk
        return bytes(data)
