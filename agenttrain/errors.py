"""The exception types the CLI shows as a plain message instead of a traceback."""


class UserError(Exception):
    """Something the user can fix: a bad config, a missing file, an unreachable endpoint."""

    exit_code = 2


class Interrupted(UserError):
    """The user pressed Ctrl-C; the run is saved as `interrupted` and can be resumed."""

    exit_code = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C
