"""One process at a time where processes started together would race: creating a SQLite store.

Two ``study run`` processes started at once on new SQLite files both run MLflow's schema migrations
(one fails with ``duplicate column name``) and both create Optuna's tables. An ``flock`` on the folder
holding the file lets the first one create it while the others wait, then find it made. The lock is
the folder itself, so no lock file is left behind.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///PATH`` URL (None for other URLs and in-memory databases)."""
    for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
        if url.startswith(prefix):
            path = url[len(prefix) :].split("?")[0]
            return Path(path) if path and path != ":memory:" else None
    return None


@contextmanager
def creating(url: str) -> Iterator[None]:
    """Hold an exclusive lock on the folder of the SQLite file ``url`` names (nothing for other URLs)."""
    path = sqlite_path(url)
    folder = path.parent if path is not None else None
    if folder is None or not folder.is_dir():
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock
