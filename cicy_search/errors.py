"""The one exception type for mistakes a user can make (bad file, bad value, bad input)."""


class CicyError(Exception):
    """A user-facing error: the CLI prints its one-line message and exits with code 2."""


class NoStudy(CicyError):
    """The named study is not in the storage (or there is no storage): a worker tells how to create it."""


def one_line(exc: BaseException, limit: int = 500) -> str:
    """An exception as one short line: the first line of its message (an MLflow exception's ``message``), else its type."""
    text = str(getattr(exc, "message", None) or exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
