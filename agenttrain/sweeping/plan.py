"""What a sweep runs: every config (an experiment YAML, or a sweep file listing several) times every seed.

A sweep file (the paper's tables under configs/paper/) names experiment configs relative to itself:

    description: Ablation on three MATH types
    runs:
      - config: ../math-number-theory.yaml
        name: nt-no-rollback                      # default: the config's own name
        set: ["optimizer.roll_back=false"]        # like --set, for this entry only
        transfer: [../math-algebra.yaml]          # also evaluate on these configs' tasks
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from agenttrain.config import ConfigError, Experiment, load_experiment, read_yaml_mapping

RUNS_FOLDER = "runs"


class SweepEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: Path
    name: str | None = None
    set: list[str] = []
    transfer: list[Path] = []


class SweepFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str | None = None
    runs: list[SweepEntry]


@dataclass(frozen=True)
class SweepJob:
    """One training run of a sweep: serialisable, so any executor can hand it to a worker."""

    id: str  # the run's name: <entry name>-s<seed>
    config: str  # absolute path of the experiment YAML
    overrides: list[str]  # everything the sweep sets, applied after the YAML
    runs_dir: str  # where the run directory lives
    transfer: list[str] = field(default_factory=list)  # experiment YAMLs whose test split is evaluated too
    use_cache: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepJob:
        return cls(**data)

    def experiment(self, check_files: bool = True) -> Experiment:
        return load_experiment(Path(self.config), self.overrides, check_files)


def _entries(path: Path) -> list[SweepEntry]:
    """The entries a CONFIG argument stands for: itself if it is an experiment, else the sweep file's list."""
    data = read_yaml_mapping(path)
    if "runs" not in data:
        return [SweepEntry(config=path.resolve())]
    try:
        sweep = SweepFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: invalid sweep file: {problems}") from None
    base = path.resolve().parent
    return [entry.model_copy(update={"config": (base / entry.config).resolve(),
                                     "transfer": [(base / t).resolve() for t in entry.transfer]})
            for entry in sweep.runs]


def plan_sweep(
    configs: list[Path], out: Path, seeds: list[int] | None, overrides: list[str], use_cache: bool = True,
    check_files: bool = True,
) -> list[SweepJob]:
    """Every entry times every seed (None: each config's own `task.seed`), validated before anything runs
    (without `check_files`, an estimate's plan: the data need not be pulled yet)."""
    if not configs:
        raise ConfigError("give at least one CONFIG (an experiment YAML or a sweep file from configs/paper/)")
    runs_dir = (out / RUNS_FOLDER).resolve()
    jobs: dict[str, SweepJob] = {}
    for path in configs:
        for entry in _entries(path):
            base = load_experiment(entry.config, [*entry.set, *overrides], check_files)
            for seed in seeds if seeds is not None else [base.task.seed]:
                job_id = f"{entry.name or base.name}-s{seed}"
                job = SweepJob(job_id, str(entry.config),
                               [*entry.set, *overrides, f"name={job_id}", f"task.seed={seed}",
                                f"output_dir={runs_dir}"],
                               str(runs_dir), [str(t) for t in entry.transfer], use_cache)
                if job_id in jobs:
                    raise ConfigError(f"{path}: two runs are named {job_id!r}; give the entries distinct `name`s")
                job.experiment(check_files)  # the full config must be valid too (e.g. a seed the split accepts)
                jobs[job_id] = job
    return list(jobs.values())
