"""The run directory, the product's memory: atomic snapshots, the event journal, and finding runs and epochs."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from agenttrain.config import Experiment, load_yaml
from agenttrain.errors import UserError
from agenttrain.functions import FunctionSet, InvalidFunction
from agenttrain.rundir.ownership import signature, signed_here
from agenttrain.rundir.records import FIRST_FORMAT, Best, EpochMetrics, RolloutRecord, RunInfo, run_format
from agenttrain.untrusted import loads, scrub

EPOCH_PREFIX = "epoch-"
RECORDED_PACKAGES = ("agenttrain", "openai", "math-verify", "sympy", "pydantic")


TEMP_SUFFIX = ".tmp"


VAL_ROLLOUTS = "val_rollouts.jsonl"  # an epoch's validation rollouts, beside rollouts.jsonl (training)

class WriteError(UserError):
    """A file of the run could not be written (a full disk, a read-only folder); nothing half-written is left."""


def write_error(path: Path, exc: OSError) -> WriteError:
    if exc.errno == errno.ELOOP:  # opened with O_NOFOLLOW
        return WriteError(f"cannot write {path}: it is a symbolic link, and agenttrain never writes through a link in "
                          "a run folder; replace it with the file it points to")
    return WriteError(f"cannot write {path}: {exc.strerror or exc}; free some disk space (or make the folder "
                      "writable)")


NO_FOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def real_path_inside(root: Path, path: Path) -> Path:
    """`path`, below `root`, when none of its parts below `root` is a symbolic link: what agenttrain writes into a run
    folder goes into its own files and folders, so a folder someone else made cannot point a write elsewhere."""
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            raise WriteError(f"cannot write {path}: {current} is a symbolic link, and agenttrain never writes through "
                             "a link in a run folder; replace it with the file or folder it points to")
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp makes owner-only files; written files get the permissions any other new file gets (as the PNGs do)
NEW_FILE_MODE = 0o666 & ~_umask()


def write_text_atomic(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never half of one; a failed write leaves no temp file. Text that is
    not valid Unicode (a lone surrogate from a model or a tool's output) is written with U+FFFD in its place."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
        os.fchmod(fd, NEW_FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(scrub(text))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise write_error(path, exc) from None


def overwrite_in_place(path: Path, text: str) -> None:
    """Rewrite an existing file in its own blocks. Not atomic: only for when a full disk has no room for the
    temp copy that `write_text_atomic` needs."""
    try:
        with open(os.open(path, os.O_RDWR | NO_FOLLOW), "r+", encoding="utf-8") as handle:
            handle.write(scrub(text))
            handle.truncate()
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise write_error(path, exc) from None


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path: Path, records: list[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_run_json(path: Path) -> Any:
    try:
        return loads(path.read_bytes())
    except FileNotFoundError:
        raise UserError(f"{path}: not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: damaged JSON ({exc.msg}, line {exc.lineno})") from None


def append_line(path: Path, line: str) -> None:
    """Append one line in a single write. A failed write is cut off again, and a line torn by an earlier crash
    is ended first, so no complete line is ever glued to a torn one."""
    data = (scrub(line) + "\n").encode()
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | NO_FOLLOW, 0o644)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        try:
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            os.ftruncate(fd, size)
            raise write_error(path, exc) from None
    finally:
        os.close(fd)


def read_journal_lines(path: Path) -> list[dict[str, Any]]:
    """Every complete line that holds a JSON object; a torn last line (a crash mid-write) and any other line that is
    not one (damaged bytes, nesting past a sane depth) are ignored."""
    if not path.exists():
        return []
    records = []
    for line in path.read_bytes().splitlines():
        try:
            record = loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _is_usage(value: Any) -> bool:
    """Per-role counts, as `UsageMeter` journals them (a line of another shape is not trusted with the budget)."""
    def counts(role: Any) -> bool:
        return isinstance(role, dict) and all(isinstance(n, int | float) for n in role.values())

    return isinstance(value, dict) and all(counts(role) for role in value.values())


def remove(path: Path) -> None:
    """Delete a file, a link (never what it points to) or a folder tree, if there is one."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def environment_record() -> dict[str, Any]:
    """Package versions, Python and the git revision of the working directory, for reproducing a run."""
    versions: dict[str, str | None] = {}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        revision = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        revision = None
    return {"python": platform.python_version(), "packages": versions, "git_revision": revision}


def read_rollouts(path: Path, version: int) -> list[RolloutRecord]:
    """A rollouts file's records in the current format."""
    return [RolloutRecord.read(line, version, path) for line in read_journal_lines(path)]


def write_rollouts(path: Path, records: Sequence[RolloutRecord]) -> None:
    write_jsonl_atomic(path, [r.to_json() for r in records])


@dataclass(frozen=True)
class Snapshot:
    epoch: int
    path: Path
    functions: FunctionSet
    metrics: EpochMetrics
    format_version: int

    def rollouts(self) -> list[RolloutRecord]:
        path = self.path / "rollouts.jsonl"
        if not path.exists():
            raise UserError(f"{path}: missing; this snapshot's rollouts were deleted")
        return read_rollouts(path, self.format_version)

    def val_rollouts(self) -> list[RolloutRecord] | None:
        """The set's rollouts on the validation split, where the method ran it there."""
        path = self.path / VAL_ROLLOUTS
        if self.metrics.val_n is None:
            return None
        if not path.exists():
            raise UserError(f"{path}: missing; this snapshot's validation rollouts were deleted")
        return read_rollouts(path, self.format_version)


def folder_format(run_path: Path) -> int:
    """The format of the run that holds `run_path`'s files; an epoch folder copied out alone is read as format 1,
    which every later format can upgrade."""
    run_json = run_path / "run.json"
    return run_format(read_run_json(run_json), run_json) if run_json.exists() else FIRST_FORMAT


def load_snapshot(path: Path, version: int | None = None) -> Snapshot:
    if not (path / "functions.json").exists():
        raise UserError(f"{path}: not an epoch snapshot (no functions.json)")
    version = folder_format(path.parent) if version is None else version
    metrics = EpochMetrics.read(read_run_json(path / "metrics.json"), version, path / "metrics.json")
    try:
        functions = FunctionSet.from_json(read_run_json(path / "functions.json"))
    except InvalidFunction as exc:
        raise UserError(f"{path / 'functions.json'}: not a function set agenttrain wrote ({exc})") from None
    return Snapshot(metrics.epoch, path, functions, metrics, version)


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = path

    # -- creating and opening -------------------------------------------------------------------------

    @classmethod
    def create(cls, experiment: Experiment, extra: dict[str, Any] | None = None) -> RunDir:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = experiment.output_dir / f"{experiment.name}-{stamp}"
        path, n = base, 1
        while path.exists():
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        try:
            path.mkdir(parents=True)
        except OSError as exc:
            raise write_error(path, exc) from None
        config = experiment.to_yaml()
        info = RunInfo(status="running", name=experiment.name, config_hash=experiment.content_hash(),
                       seed=experiment.task.seed, started=_now(), config_signature=signature(config),
                       **environment_record(), **(extra or {}))
        try:
            write_text_atomic(path / "config.yaml", config)
            write_json_atomic(path / "run.json", info.to_json())
        except WriteError:
            shutil.rmtree(path, ignore_errors=True)  # a run that never started leaves nothing behind
            raise
        return cls(path)

    @classmethod
    def open(cls, path: Path) -> RunDir:
        if not (path / "run.json").exists():
            raise UserError(f"{path}: not a run directory (no run.json); runs live under runs/<name>-<stamp>/")
        return cls(path)

    def experiment(self) -> Experiment:
        try:
            return Experiment.model_validate(load_yaml((self.path / "config.yaml").read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, yaml.YAMLError, ValidationError) as exc:
            raise UserError(f"{self.path / 'config.yaml'}: cannot read the run's config: {exc}") from None

    def write_config(self, experiment: Experiment) -> None:
        """Rewrite config.yaml (a resume that moved the endpoint or raised the budget), signed as this user's."""
        config = experiment.to_yaml()
        write_text_atomic(self.path / "config.yaml", config)
        self.update_info(config_signature=signature(config))

    def made_here(self) -> bool:
        """Whether this user made (or adopted) the run on this machine: its config.yaml carries their signature."""
        try:
            config = (self.path / "config.yaml").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return False
        return signed_here(config, self.info().config_signature)

    # -- the lock: one training process per run ---------------------------------------------------------

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Held while a process trains this run, so a second `--resume` cannot write the same epochs.

        An OS lock (flock) on `.lock`: the kernel releases it when the process ends however it ends, so there
        is no stale lock to clean up, and the file is never deleted, so two processes cannot each lock a copy.
        """
        path = self.path / ".lock"
        if path.is_symlink():  # never followed: the link itself is replaced (it holds nothing but a process id)
            path.unlink()
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | NO_FOLLOW, NEW_FILE_MODE)
        handle = open(fd, "a+", encoding="utf-8")  # noqa: SIM115 -- kept open while the lock is held
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self.locked_by()
                raise UserError(f"{self.path}: process {holder or '(unknown)'} is training this run") from None
            handle.truncate(0)
            handle.write(str(os.getpid()))
            handle.flush()
            yield
        finally:
            handle.close()  # releases the lock

    def locked_by(self) -> int | None:
        """The process training this run (0 if not yet known), or None when no process holds its lock."""
        try:
            with open(self.path / ".lock", encoding="utf-8") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    return int(handle.read() or 0)  # 0: held, its process id not yet written
                return None  # the lock was free (our shared lock is released as the file closes)
        except (OSError, ValueError):
            return None

    # -- run.json and the journal ---------------------------------------------------------------------

    @property
    def format_version(self) -> int:
        """The format the run's files were written in (run.json is rewritten in the current one)."""
        return folder_format(self.path)

    def info(self) -> RunInfo:
        path = self.path / "run.json"
        data = read_run_json(path)
        return RunInfo.read(data, run_format(data, path), path)

    def update_info(self, **fields: Any) -> None:
        """Rewrite run.json with `fields` changed. An older run's run.json is written in the current format;
        the upgrade steps so far change run.json only, so its other files stay valid as they are."""
        write_json_atomic(self.path / "run.json", {**self.info().to_json(), **fields})

    def finish(self, status: str, **fields: Any) -> None:
        """Record how the run ended, even on a full disk (then run.json is rewritten in its own blocks)."""
        path = self.path / "run.json"
        info = {**self.info().to_json(), "status": status, "finished": _now(), **fields}
        try:
            write_json_atomic(path, info)
        except WriteError:
            overwrite_in_place(path, json.dumps(info, indent=2, ensure_ascii=False) + "\n")

    def log(self, event: str, **data: Any) -> None:
        """Append one line to events.jsonl, so a crash loses at most the line being written."""
        line = json.dumps({"time": _now(), "event": event, **data}, ensure_ascii=False)
        append_line(self.path / "events.jsonl", line)

    def events(self) -> list[dict[str, Any]]:
        return read_journal_lines(self.path / "events.jsonl")

    def spent(self) -> dict[str, dict[str, Any]]:
        """Usage per role as last journaled (it includes requests of an epoch that never finished)."""
        journaled = [e["usage"] for e in self.events() if _is_usage(e.get("usage"))]
        return journaled[-1] if journaled else self.info().usage or {}

    # -- snapshots ------------------------------------------------------------------------------------

    def save_snapshot(
        self, functions: FunctionSet, metrics: EpochMetrics, rollouts: Sequence[RolloutRecord],
        val_rollouts: Sequence[RolloutRecord] | None = None,
    ) -> Path:
        """Write the epoch folder under a temporary name, then rename it: a snapshot that exists is complete."""
        final = self.path / f"{EPOCH_PREFIX}{metrics.epoch}"
        if os.path.lexists(final):
            raise UserError(f"{final} already exists; a snapshot is never overwritten")
        tmp = self.path / f".{final.name}{TEMP_SUFFIX}"
        remove(tmp)  # left by a process killed while writing it
        try:
            (tmp / "functions").mkdir(parents=True)  # a new folder: nothing in it can be a link
            for function in functions:
                (tmp / "functions" / f"{function.name}.py").write_text(scrub(function.code), encoding="utf-8")
            (tmp / "functions.json").write_text(json.dumps(functions.to_json(), indent=2) + "\n", encoding="utf-8")
            (tmp / "metrics.json").write_text(json.dumps(metrics.to_json(), indent=2) + "\n", encoding="utf-8")
            for name, records in (("rollouts.jsonl", rollouts), (VAL_ROLLOUTS, val_rollouts)):
                if records is not None:
                    with open(tmp / name, "w", encoding="utf-8") as handle:
                        handle.writelines(scrub(json.dumps(r.to_json(), ensure_ascii=False)) + "\n" for r in records)
            os.rename(tmp, final)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise write_error(final, exc) from None
        return final

    def remove_leftovers(self) -> None:
        """Delete the temp files and snapshot folders a killed process left half-written."""
        evals = [] if self.evals_dir.is_symlink() else self.evals_dir.glob(f".*{TEMP_SUFFIX}")
        for leftover in [*self.path.glob(f".*{TEMP_SUFFIX}"), *evals]:
            remove(leftover)

    def epochs(self) -> list[int]:
        numbers = []
        for child in self.path.glob(f"{EPOCH_PREFIX}*"):
            suffix = child.name[len(EPOCH_PREFIX):]
            if child.is_dir() and suffix.isdigit():
                numbers.append(int(suffix))
        return sorted(numbers)

    def snapshot(self, epoch: int) -> Snapshot:
        path = self.path / f"{EPOCH_PREFIX}{epoch}"
        if not path.is_dir():
            raise UserError(f"{self.path}: no epoch {epoch}; epochs are {self.epochs()}")
        return load_snapshot(path, self.format_version)

    def set_best(self, best: Best) -> None:
        """best.json, for readers; the snapshots' metrics are the record it is derived from."""
        write_json_atomic(self.path / "best.json", best.to_json())

    def best_epoch(self) -> int:
        best = self.best_if_any()
        if best is None:
            raise UserError(f"{self.path}: the run has no snapshot yet")
        return best

    def best_if_any(self) -> int | None:
        """What the last snapshot recorded as best. It is written with the snapshot, so unlike best.json it
        cannot lag behind when a process dies between the two writes."""
        epochs = self.epochs()
        return self.snapshot(epochs[-1]).metrics.best_epoch if epochs else None

    def resolve_epoch(self, ref: str) -> int:
        """`best`, `N` or `epoch-N`."""
        if ref == "best":
            return self.best_epoch()
        number = ref[len(EPOCH_PREFIX):] if ref.startswith(EPOCH_PREFIX) else ref
        if not number.isdigit():
            raise UserError(f"epoch {ref!r}: use best, a number, or epoch-N")
        return int(number)

    @property
    def evals_dir(self) -> Path:
        return self.path / "evals"

    def writable(self, *parts: str) -> Path:
        """The path of a file or folder to write inside the run; refused (WriteError) where a link would lead the
        write out of it."""
        return real_path_inside(self.path, self.path.joinpath(*parts))


def _started(path: Path) -> str:
    """When a run started; for a damaged run.json, when its folder last changed."""
    try:
        return str(loads((path / "run.json").read_bytes())["started"])
    except (OSError, ValueError, KeyError, TypeError):
        return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")


def find_runs(output_dir: Path) -> list[Path]:
    """Run directories under `output_dir`, oldest first by start time (evaluating an old run does not make it
    the newest)."""
    if not output_dir.is_dir():
        return []
    runs = [p for p in output_dir.iterdir() if (p / "run.json").exists()]
    return sorted(runs, key=lambda p: (_started(p), p.name))


def newest_run(output_dir: Path) -> RunDir:
    runs = find_runs(output_dir)
    if not runs:
        raise UserError(f"no runs under {output_dir}; train one first, or pass --run RUN")
    return RunDir(runs[-1])


def resolve_snapshot(ref: str, run: RunDir | None) -> Snapshot:
    """An epoch folder path, or `epoch-N` / `best` inside `run`."""
    path = Path(ref)
    if path.is_dir() and (path / "functions.json").exists():
        return load_snapshot(path)
    if run is None:
        raise UserError(f"{ref!r} is not an epoch folder; pass --run RUN to name epochs like epoch-3")
    return run.snapshot(run.resolve_epoch(ref))

