"""Which run folders this user made on this machine: run.json carries a signature of the run's config.yaml, made with
a key that only this user can read. `eval` and `--resume` trust the endpoints of a config.yaml whose signature holds
(agenttrain.training.trust); a folder someone else made (copied, downloaded, shared) cannot forge one, and a
signature copied from one of your runs holds only for that run's own config.yaml.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

import platformdirs

KEY_FILE = "run-signing.key"


def key_path() -> Path:
    return Path(platformdirs.user_config_dir("agenttrain")) / KEY_FILE


def _key() -> bytes | None:
    """This user's signing key, made on first use (readable by this user only); None where it cannot be kept."""
    path = key_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        pass  # made by an earlier run (or by another process just now)
    except OSError:
        return None
    else:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_hex(32))
    try:
        key = path.read_bytes().strip()
    except OSError:
        return None
    return key or None


def signature(config_text: str) -> str | None:
    """The signature run.json records for a config.yaml with this text (None: no key can be kept here)."""
    key = _key()
    return None if key is None else hmac.new(key, config_text.encode(), hashlib.sha256).hexdigest()


def signed_here(config_text: str, recorded: str | None) -> bool:
    """Whether `recorded` is this user's signature of `config_text`: the run was made (or adopted) by this user."""
    expected = signature(config_text) if recorded else None
    return expected is not None and recorded is not None and hmac.compare_digest(expected, recorded)
