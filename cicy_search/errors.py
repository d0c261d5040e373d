"""The one exception type for mistakes a user can make (bad file, bad value, bad input)."""


class CicyError(Exception):
    """A user-facing error: the CLI prints its one-line message and exits with code 2."""
