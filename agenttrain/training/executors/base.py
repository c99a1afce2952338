"""What the trainer and `eval` ask of an executor: run an epoch's rollouts, scored, and report each as it ends."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from agenttrain.functions import FunctionSet
    from agenttrain.rundir.records import RolloutRecord
    from agenttrain.tasks.base import Example

RecordCallback = Callable[["RolloutRecord"], None]


class RolloutExecutor(Protocol):
    async def run(
        self,
        examples: Sequence[Example],
        functions: FunctionSet,
        on_record: RecordCallback | None = None,
        done: dict[str, RolloutRecord] | None = None,
    ) -> list[RolloutRecord]:
        """Scored records in the order of `examples`; `on_record` sees each as it is finished, in this process;
        ids in `done` (journaled before a crash) are returned as they are, not run again."""
        ...
