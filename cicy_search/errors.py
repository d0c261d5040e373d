"""The one exception type for mistakes a user can make (bad file, bad value, bad input)."""


class CicyError(Exception):
    """A user-facing error: the CLI prints its one-line message and exits with code 2."""


class NoStudy(CicyError):
    """The named study is not in the storage (or there is no storage): a worker tells how to create it."""


def one_line(exc: BaseException, limit: int = 500) -> str:
    """An exception as one short line: the first line of its message (an MLflow exception's ``message``), else its type."""
    text = str(getattr(exc, "message", None) or exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


# What SQLite, the OS and MLflow say when a store cannot grow: a full disk, a quota or a file-size limit.
OUT_OF_SPACE = ("disk I/O error", "database or disk is full", "No space left on device", "File too large", "Disk quota exceeded")


def out_of_space(error: BaseException | str | None) -> str | None:
    """The first line saying a store could not be written for want of space, in ``error`` or the exceptions that
    caused it (an Optuna or MLflow error wrapping SQLite's); None if it says nothing of the kind."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        text = error if isinstance(error, str) else str(error)
        for line in text.splitlines():
            if any(marker.lower() in line.lower() for marker in OUT_OF_SPACE):
                return line.strip()[:300]
        if isinstance(error, str):
            return None
        error = error.__cause__ or error.__context__
    return None
