"""The one exception type the CLI shows as a plain message instead of a traceback."""


class UserError(Exception):
    """Something the user can fix: a bad config, a missing file, an unreachable endpoint."""
