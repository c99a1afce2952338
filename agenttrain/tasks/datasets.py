"""`agenttrain data pull`: download MATH, TabMWP or GAIA and lay them out the way the task loaders read them.

Sources (each can be replaced by a mirror with `source=`):
- MATH: the HF dataset `EleutherAI/hendrycks_math` (the original release as parquet, one folder per subject),
  converted to `train.jsonl` / `test.jsonl` with the fields `tasks/math.py` reads. The original per-problem
  file names are not in that copy, so `unique_id` is `<split>/<subject>/<row>`; `answer` is the last
  `\\boxed{}` of the solution, as Hendrycks extracts it.
- TabMWP: PromptPG's own JSON files from its GitHub repository, pinned to one commit (no hub copy keeps
  PromptPG's format and ids). The dev and test splits and their 1k subsets; the train split (23k) is
  not needed for the paper's settings.
- GAIA: the gated HF dataset `gaia-benchmark/GAIA`, validation split only (the test split has no public
  answers). It needs an accepted licence on the dataset page and a token (`HF_TOKEN` or `hf auth login`).
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agenttrain.errors import UserError
from agenttrain.names import DATASETS
from agenttrain.scorers.extraction import last_boxed_content
from agenttrain.tasks.base import DataError

MATH_REPO = "EleutherAI/hendrycks_math"
GAIA_REPO = "gaia-benchmark/GAIA"
TABMWP_URL = "https://raw.githubusercontent.com/lupantech/PromptPG/7cf61b1bec07222fc24b4f5a1410911f77c2d2c9/data/tabmwp"
TABMWP_FILES = ("problems_test.json", "problems_dev.json", "problems_test1k.json", "problems_dev1k.json")
DOWNLOAD_TIMEOUT_S = 60


class DownloadError(UserError):
    """A dataset that cannot be fetched: no network, no access, or a source that moved."""


def pull(name: str, dest: Path, *, source: str | None = None) -> Path:
    """Fetch dataset `name` into `dest`; returns the path to use as `task.path`."""
    pullers: dict[str, Callable[[Path, str | None], Path]] = {
        "math": _pull_math,
        "tabmwp": _pull_tabmwp,
        "gaia": _pull_gaia,
    }
    if name not in pullers:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        return pullers[name](dest, source)
    except BaseException:
        if created:  # a failed pull leaves no empty or half-filled folder behind to be mistaken for data
            shutil.rmtree(dest, ignore_errors=True)
        raise


def _pull_math(dest: Path, source: str | None) -> Path:
    snapshot = _hub_snapshot(source or MATH_REPO, allow_patterns=["*/*.parquet"])
    return convert_math(snapshot, dest)


def _pull_tabmwp(dest: Path, source: str | None) -> Path:
    for name in TABMWP_FILES:
        _download(f"{source or TABMWP_URL}/{name}", dest / name)
    return dest / TABMWP_FILES[0]


def _pull_gaia(dest: Path, source: str | None) -> Path:
    _hub_snapshot(source or GAIA_REPO, local_dir=dest, allow_patterns=["2023/validation/*", "README.md"])
    return dest


def _hub_snapshot(repo: str, **options: Any) -> Path:
    """Download a dataset repository from the hub (or HF_ENDPOINT); errors say what to do about them."""
    from huggingface_hub import snapshot_download  # heavy: only for `data pull`
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    try:
        return Path(snapshot_download(repo, repo_type="dataset", endpoint=endpoint, **options))
    except LocalEntryNotFoundError as exc:
        raise DownloadError(
            f"cannot reach the Hugging Face hub at {endpoint} to download {repo} ({exc.__cause__ or exc}); "
            f"check the network, or set HF_ENDPOINT to a reachable mirror"
        ) from None
    except RepositoryNotFoundError:
        raise DownloadError(
            f"no access to the dataset {repo} on {endpoint}. If it is gated (GAIA is), accept its terms at "
            f"{endpoint}/datasets/{repo} while logged in, then export HF_TOKEN=<a read token> "
            f"(or run `hf auth login`)"
        ) from None
    except HfHubHTTPError as exc:
        raise DownloadError(f"the hub refused to serve {repo}: {exc}") from None


def _download(url: str, target: Path) -> None:
    """Fetch one file; it appears at `target` only when complete."""
    partial = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            partial.write_bytes(response.read())
    except (urllib.error.URLError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"cannot download {url}: {getattr(exc, 'reason', exc)}; check the network") from None
    partial.replace(target)


def convert_math(snapshot: Path, dest: Path) -> Path:
    """`<subject>/<split>-*.parquet` files to `dest/<split>.jsonl`; returns the test file."""
    files = sorted(snapshot.glob("*/*.parquet"))
    if not files:
        raise DataError(f"{snapshot}: no <subject>/<split>-*.parquet files; is this a copy of {MATH_REPO}?")
    dest.mkdir(parents=True, exist_ok=True)
    by_split: dict[str, list[dict[str, str]]] = {}
    for file in files:
        split, subject = file.name.split("-")[0], file.parent.name
        by_split.setdefault(split, []).extend(_math_records(file, split, subject))
    for split, records in by_split.items():
        lines = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        (dest / f"{split}.jsonl").write_text(lines, encoding="utf-8")
    return dest / "test.jsonl"


def _math_records(file: Path, split: str, subject: str) -> list[dict[str, str]]:
    import pyarrow as pa  # heavy (numpy): only for `data pull`
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(file, columns=["problem", "level", "type", "solution"]).to_pylist()
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{file}: not a MATH parquet file with problem/level/type/solution ({exc})") from None
    records = []
    for row_number, row in enumerate(rows):
        unique_id = f"{split}/{subject}/{row_number}"
        answer = last_boxed_content(row["solution"] or "")
        if answer is None:
            raise DataError(f"{file}: row {row_number} has no \\boxed{{}} answer in its solution")
        records.append({"unique_id": unique_id, **row, "answer": answer})
    return records
