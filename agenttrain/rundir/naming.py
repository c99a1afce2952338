"""The names of an evaluation's files, written and read in this one place.

`agenttrain eval` writes RUN/evals/STEM.json and STEM.rollouts.jsonl, where STEM is
`[transfer-NAME-][firstN-]SPLIT-epoch-N`: the prefix keeps a transfer evaluation or a smoke run on the first N
tasks from ever standing in for the run's own result on that split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

EPOCH_MARK = "-epoch-"
RESULT_SUFFIX = ".json"
ROLLOUTS_SUFFIX = ".rollouts.jsonl"


@dataclass(frozen=True)
class EvalName:
    """What an evaluation's stem says: the split as named in the file (with its prefix) and the epoch."""

    split: str  # e.g. test, val, transfer-geometry-test, first5-test
    epoch: int

    @property
    def stem(self) -> str:
        return f"{self.split}{EPOCH_MARK}{self.epoch}"  # names may hold dots: never with_suffix

    def result(self, evals_dir: Path) -> Path:
        return evals_dir / f"{self.stem}{RESULT_SUFFIX}"

    def rollouts(self, evals_dir: Path) -> Path:
        return evals_dir / f"{self.stem}{ROLLOUTS_SUFFIX}"

    @classmethod
    def parse(cls, stem: str) -> EvalName | None:
        """The name of a stem, or None for one that is not an evaluation's."""
        split, mark, epoch = stem.rpartition(EPOCH_MARK)
        return cls(split, int(epoch)) if mark and split and epoch.isdigit() else None


def eval_split(split: str, transfer: str | None = None, limit: int | None = None) -> str:
    """The split as an evaluation's file names it."""
    return f"{f'transfer-{transfer}-' if transfer else ''}{f'first{limit}-' if limit is not None else ''}{split}"


def saved_evaluations(evals_dir: Path) -> list[tuple[EvalName, Path]]:
    """Every evaluation result file under `evals_dir` (not the rollouts beside them), with its name."""
    found = []
    for path in evals_dir.glob(f"*{EPOCH_MARK}*{RESULT_SUFFIX}"):
        name = EvalName.parse(path.name.removesuffix(RESULT_SUFFIX))
        if name is not None and not path.name.endswith(ROLLOUTS_SUFFIX):
            found.append((name, path))
    return found
