"""Optuna storages: the local SQLite default, any RDB URL (PostgreSQL for clusters), journal files.

RDB storages get a heartbeat, so a trial whose worker died is failed after the grace period and
re-queued for another worker (``RetryHeartbeatStaleTrialCallback``).
"""

from __future__ import annotations

import re
import warnings

from .errors import CicyError
from .tracking import local_home

HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 90
MAX_RETRY = 3


def default_url() -> str:
    home = local_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'optuna.db'}"


def redact(url: str) -> str:
    """The URL with any password hidden, for messages and tags."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def open_storage(url: str | None = None, *, heartbeat_interval: int = HEARTBEAT_SECONDS, grace_period: int = GRACE_SECONDS):
    """An Optuna storage for ``url`` (default: SQLite in ``mlruns/``), checked to answer.

    ``journal:PATH`` (or a path ending in ``.log``) is a journal file on a shared file system, for
    clusters without a database.
    """
    import optuna

    url = url or default_url()
    if url.startswith("journal:") or url.endswith(".log"):
        from optuna.storages.journal import JournalFileBackend

        path = url.removeprefix("journal:")
        try:
            return optuna.storages.JournalStorage(JournalFileBackend(path))
        except OSError as e:
            raise CicyError(f"Optuna journal storage {path}: {e.strerror or e}") from None
    if "://" not in url:
        raise CicyError(f"storage {url!r}: expected a database URL (sqlite:///..., postgresql://...) or journal:PATH")
    try:
        with warnings.catch_warnings():  # heartbeat and retries are flagged experimental; they are what we want
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
            )
    except Exception as e:  # sqlalchemy raises many types for "cannot connect"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CicyError(f"Optuna storage {redact(url)} is unreachable: {first[:200]}") from None
