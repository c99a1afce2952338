"""Task attachments (GAIA's files, any `Example.files`) travel to Ray workers through Ray's object store, so that no
node needs the driver's data folder: the driver puts each file in the store once per run, before the epoch's
rollouts start, and a worker writes the copy it needs into a private folder of its own, once per file, and runs the
rollout on that copy."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import ray

from agenttrain.errors import UserError
from agenttrain.tasks.base import Example


@dataclass(frozen=True)
class Attachment:
    name: str  # the file's name, which the task's question refers to
    digest: str  # sha256 of its bytes: where a worker keeps its copy
    data: ray.ObjectRef  # its bytes, in the object store


class Outbox:
    """The driver's side: each attachment of the run, put in the object store once."""

    def __init__(self) -> None:
        self._put: dict[Path, Attachment] = {}

    def ship(self, example: Example) -> tuple[Attachment, ...]:
        return tuple(self._attachment(path) for path in example.files)

    def _attachment(self, path: Path) -> Attachment:
        if path not in self._put:
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise UserError(f"{path}: cannot read this attachment to send it to the Ray workers ({exc})") from None
            self._put[path] = Attachment(path.name, hashlib.sha256(data).hexdigest(), ray.put(data))
        return self._put[path]


class Inbox:
    """A worker's side: its copies of the attachments, in a folder of its own that `close` removes."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="agenttrain-attachments-"))

    async def receive(self, example: Example, attachments: tuple[Attachment, ...]) -> Example:
        """The example with its files at this worker's copies."""
        if not attachments:
            return example
        return replace(example, files=tuple([await self._copy(attachment) for attachment in attachments]))

    async def _copy(self, attachment: Attachment) -> Path:
        path = self.folder / attachment.digest / attachment.name
        if not path.exists():
            data: bytes = await attachment.data
            path.parent.mkdir(exist_ok=True)
            # written aside, then renamed: a rollout of this worker that needs the same file meanwhile never sees
            # half of it
            with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as partial:
                partial.write(data)
            os.replace(partial.name, path)
        return path

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
