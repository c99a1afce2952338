"""The exception types the CLI shows as a plain message instead of a traceback."""

from __future__ import annotations

import importlib
from types import ModuleType


class UserError(Exception):
    """Something the user can fix: a bad config, a missing file, an unreachable endpoint."""

    exit_code = 2


class Interrupted(UserError):
    """The user pressed Ctrl-C; the run is saved as `interrupted` and can be resumed."""

    exit_code = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C


class MissingExtra(UserError):
    """A feature whose optional dependencies are not installed."""


def import_extra(module: str, extra: str, feature: str) -> ModuleType:
    """`module`, or one line naming the extra to install: the optional extras are imported only where used."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(f"{feature} needs {exc.name or module}, which is not installed: "
                           f"pip install 'agenttrain[{extra}]'") from None
