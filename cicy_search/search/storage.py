"""Optuna storages: the local SQLite default, any RDB URL (PostgreSQL for clusters), journal files.

Every storage gets a heartbeat: a trial whose worker died (kill -9, node lost) is failed after the
grace period by whichever worker looks next, its MLflow run is closed as failed, and the trial is
re-queued with the same parameters for another worker (``RetryStaleTrial``). Optuna 5 has one for RDB
storages; journal files get ``HeartbeatJournalStorage``'s (the time of each beat appended to the file).
"""

from __future__ import annotations

import bisect
import copy
import fcntl
import functools
import hashlib
import logging
import operator
import os
import re
import time
import warnings
from pathlib import Path

from .. import compat
from ..errors import CicyError, one_line
from ..tracking import check_sqlite, local_home
from ..tracking import links

HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 90
MAX_RETRY = 3
LOST = "worker lost (heartbeat stale)"
CONNECT_TIMEOUT = 10

log = logging.getLogger(__name__)


def default_url() -> str:
    home = local_home(create=True)
    return f"sqlite:///{home / 'optuna.db'}"


def redact(url: str) -> str:
    """The URL with any password hidden, for messages and tags."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def with_driver(url: str) -> str:
    """``postgresql://`` with the installed driver: SQLAlchemy 2.1 defaults to psycopg 3, the
    project ships psycopg2."""
    import importlib.util

    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix) and importlib.util.find_spec("psycopg") is None:
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


def is_journal(url: str | None) -> bool:
    return bool(url) and (url.startswith("journal:") or url.endswith(".log"))


def check_url(url: str | None) -> None:
    """A storage URL that can work, checked without creating anything (so a typo leaves no file behind).

    ``open_storage`` repeats these checks; commands call this first, before MLflow or Optuna write.
    """
    from ..locks import sqlite_path

    url = url or default_url()
    if is_journal(url):
        folder = Path(url.removeprefix("journal:")).parent
        if not folder.is_dir():
            raise CicyError(f"Optuna journal storage {url}: folder {folder} does not exist")
        return
    if "://" not in url:
        raise CicyError(f"storage {url[:100]!r}: expected a database URL (sqlite:///..., postgresql://...) or journal:PATH")
    path = sqlite_path(url)
    if path is not None and not path.parent.is_dir():
        raise CicyError(f"Optuna storage {redact(url)}: folder {path.parent} does not exist")
    if path is not None and path.is_dir():
        raise CicyError(f"Optuna storage {redact(url)}: {path} is a folder")
    check_sqlite(path)


def _seconds(value: int | None, env: str, default: int) -> int:
    if value is not None:
        return int(value)
    raw = os.environ.get(env)
    if raw is None:
        return default
    try:
        seconds = int(raw)
    except ValueError:
        raise CicyError(f"{env}={raw!r}: expected whole seconds") from None
    if seconds < 1:
        raise CicyError(f"{env}={raw!r}: expected at least 1 second")
    return seconds


def heartbeat_settings(heartbeat_interval: int | None = None, grace_period: int | None = None) -> tuple[int, int]:
    """Heartbeat interval and grace period in seconds: given, else ``CICY_HEARTBEAT_INTERVAL`` /
    ``CICY_GRACE_PERIOD``, else 30 s and 90 s. The grace period must exceed the interval."""
    interval = _seconds(heartbeat_interval, "CICY_HEARTBEAT_INTERVAL", HEARTBEAT_SECONDS)
    grace = _seconds(grace_period, "CICY_GRACE_PERIOD", GRACE_SECONDS)
    if grace <= interval:
        raise CicyError(f"heartbeat: the grace period ({grace} s) must be longer than the interval ({interval} s)")
    return interval, grace


class RetryStaleTrial:
    """Heartbeat-stale trial callback: close the dead trial's MLflow run as FAILED, then re-queue it.

    The retry is a WAITING trial with the same parameters (``RetryHeartbeatStaleTrialCallback``), its
    user attribute ``retry_of`` naming the lost trial. MLflow errors are logged, never raised: the
    retry matters more than the bookkeeping.

    Args:
        max_retry: how often one trial may be retried (a trial that keeps killing workers stops).
        tracking_uri: where the trial runs are; default the study's ``tracking_uri`` user attribute.
    """

    def __init__(self, max_retry: int = MAX_RETRY, *, tracking_uri: str | None = None):
        import optuna

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        self.tracking_uri = tracking_uri

    def __call__(self, study, trial) -> None:
        run_id = links.run_id(trial)
        retry = copy.deepcopy(trial)
        retry.user_attrs = {"retry_of": trial.number}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._retry(study, retry)
        if run_id:
            close_lost_run(links.tracking_uri(study, self.tracking_uri), run_id, trial)


def close_lost_run(tracking_uri: str | None, run_id: str, trial=None) -> bool:
    """End a RUNNING MLflow run whose worker is gone as FAILED with ``failure_reason``; True when closed.

    A run gets its params with its first metric batch: one lost before that gets them from the trial (``trial``:
    its ``config``, the split sizes that config gives, and its number), so that it still says what it trained.
    """
    from .. import tracking
    from ..config import flatten

    try:
        client = tracking.client(tracking_uri)
        got = client.get_run(run_id)
        if got.info.status != "RUNNING":
            return False
        run = tracking.Run(client, run_id)
        if trial is not None and "config" in trial.user_attrs:
            config = trial.user_attrs["config"]
            params = {**flatten(config), **_split_sizes(config), "trial.number": trial.number}
            run.log_params({k: v for k, v in params.items() if k not in got.data.params}, with_metrics=True)
        run.end("FAILED", tags={"state": "failed", "failure_reason": LOST})
        return True
    except Exception as e:  # a tracking outage must not stop the worker that noticed the loss
        log.warning("could not close MLflow run %s of a lost trial: %s", run_id, e)
        return False


_NUMBER = operator.attrgetter("number")


class FinishedIndex:
    """A journal study's finished trials, kept up to date as the journal grows, for ``get_all_trials``.

    Optuna's journal storage answers each ``get_all_trials`` by walking every trial of the study (a cost that grows
    with the study: docs/performance.md), and a trial asks 5 to 10 times (the sampler, the budget check, the heartbeat's look for
    stale trials, the pruner). A finished trial never changes, so the index keeps the finished ones, by number,
    one list per set of states asked for, and looks again only at the unfinished and the new ones. Its answers are
    Optuna's: the same trial objects in the same order.
    """

    def __init__(self):
        self.seen = 0  # the study's trial ids looked at so far
        self.unfinished: list[int] = []  # of those, the trial ids not finished when last looked at, by number
        self.finished: dict[frozenset | None, list] = {None: []}  # states asked for -> finished trials in them
        self.counts: dict = {}  # finished trials per state

    def update(self, ids: list[int], trials: dict) -> None:
        """Look at the trials unfinished so far and the new ones (``ids``: the study's trial ids by number)."""
        still = []
        for trial_id in self.unfinished + ids[self.seen :]:  # by number: the unfinished are older than the new
            trial = trials[trial_id]
            if not trial.state.is_finished():
                still.append(trial_id)
                continue
            self.counts[trial.state] = self.counts.get(trial.state, 0) + 1
            for states, finished in self.finished.items():
                if states is None or trial.state in states:
                    bisect.insort(finished, trial, key=_NUMBER)  # at the end unless an older trial finished late
        self.unfinished, self.seen = still, len(ids)

    def trials(self, trials: dict, states=None) -> list:
        """The study's trials in ``states`` (all: None) by number, as ``JournalStorage.get_all_trials`` gives them."""
        key = None if states is None else frozenset(states)
        if key not in self.finished:
            self.finished[key] = [t for t in self.finished[None] if t.state in key]
        answer = list(self.finished[key])
        for trial_id in self.unfinished:
            trial = trials[trial_id]
            if key is None or trial.state in key:
                answer.insert(bisect.bisect(answer, trial.number, key=_NUMBER), trial)
        return answer

    def count_states(self, trials: dict) -> dict:
        counts = dict(self.counts)
        for trial_id in self.unfinished:
            state = trials[trial_id].state
            counts[state] = counts.get(state, 0) + 1
        return counts


HEARTBEAT_ATTR = "cicy:heartbeat"  # a journal trial's last heartbeat (Unix time, the worker's clock)


@functools.lru_cache(maxsize=None)
def _heartbeat_journal_class():
    """``HeartbeatJournalStorage``, defined on first use (Optuna is imported only then); one class per process."""
    import optuna

    class HeartbeatJournalStorage(optuna.storages.JournalStorage, compat.heartbeat_base()):
        """A journal file with Optuna's heartbeat, which Optuna 5 gives only to RDB storages.

        The running trial's heartbeat thread (Optuna's own, started by ``optimize``) appends the time every
        ``heartbeat_interval`` seconds as the trial's system attribute ``cicy:heartbeat``; a RUNNING trial whose
        last beat (or start, before its first) is more than ``grace_period`` seconds old is stale, and
        ``optuna.storages.fail_stale_trials`` fails it and calls ``heartbeat_stale_trial_callback``. When two
        workers fail one trial at once the journal keeps the first and the second is told
        (``UpdateFinishedTrialError``), so the callback runs once. The times are the workers' clocks: keep the
        hosts' clocks in step (NTP) to well within the grace period.

        Reads of a study's trials come from a ``FinishedIndex`` of the journal's replayed log: Optuna's own
        ``get_all_trials`` walks every trial of the study at each call, which a trial makes 5 to 10 times.
        """

        def __init__(self, backend, *, heartbeat_interval: int, grace_period: int, heartbeat_stale_trial_callback=None):
            super().__init__(backend)
            self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
            self.heartbeat_stale_trial_callback = heartbeat_stale_trial_callback
            self.indexes: dict[int, FinishedIndex] = {}

        def _indexed(self, study_id: int, read):
            """``read(index, trials)`` on the study's index brought up to the journal's end; None for a study that
            does not exist (Optuna's own read then raises for it)."""
            with compat.journal_replay(self) as replay:
                if study_id not in replay.studies:
                    return None
                index = self.indexes.setdefault(study_id, FinishedIndex())
                index.update(replay.trial_ids[study_id], replay.trials)
                return read(index, replay.trials)

        def get_all_trials(self, study_id: int, deepcopy: bool = True, states=None) -> list:
            trials = self._indexed(study_id, lambda index, all_trials: index.trials(all_trials, states))
            if trials is None:
                return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)
            return copy.deepcopy(trials) if deepcopy else trials

        def count_states(self, study_id: int) -> dict | None:
            """Trials per state (``{TrialState: n}``), from the index: no walk over the study's trials."""
            return self._indexed(study_id, lambda index, all_trials: index.count_states(all_trials))

        def record_heartbeat(self, trial_id: int) -> None:
            try:
                self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
            except optuna.exceptions.UpdateFinishedTrialError:  # it ended (or was taken for lost) meanwhile
                pass

        def stale_trial_ids(self, study_id: int) -> list[int]:
            now = time.time()
            running = self.get_all_trials(study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            return [
                self.get_trial_id_from_study_id_trial_number(study_id, t.number)
                for t in running
                if now - t.system_attrs.get(HEARTBEAT_ATTR, t.datetime_start.timestamp() if t.datetime_start else now) > self.grace_period
            ]

        def get_heartbeat_interval(self) -> int | None:
            return self.heartbeat_interval

        def get_heartbeat_stale_trial_callback(self):
            return self.heartbeat_stale_trial_callback

    return HeartbeatJournalStorage


def _split_sizes(config: dict) -> dict:
    """The split sizes (``data.n_train``, ...) a finished trial's run has, from its config's ``data`` section; none
    when they cannot be had here (a config without one, a list imported on another host)."""
    from .. import data

    try:
        _, s = data.select(config["data"])
    except Exception:
        return {}
    return {f"data.n_{k}": len(getattr(s, k)) for k in ("train", "val", "test")}


def open_storage(
    url: str | None = None,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    tracking_uri: str | None = None,
):
    """An Optuna storage for ``url`` (default: SQLite in ``mlruns/``), checked to answer.

    ``journal:PATH`` (or a path ending in ``.log``) is a journal file on a shared file system, for
    clusters without a database. Every storage gets the heartbeat of ``heartbeat_settings`` (a journal file
    ``HeartbeatJournalStorage``'s); a PostgreSQL server that does not answer within 10 s is reported as unreachable.
    """
    import optuna

    url = url or default_url()
    interval, grace = heartbeat_settings(heartbeat_interval, grace_period)
    if is_journal(url):
        from .journal import TornTailJournalFileBackend

        path = url.removeprefix("journal:")
        try:
            return _heartbeat_journal_class()(TornTailJournalFileBackend(path), heartbeat_interval=interval, grace_period=grace,
                                              heartbeat_stale_trial_callback=RetryStaleTrial(tracking_uri=tracking_uri))  # fmt: skip
        except OSError as e:
            raise CicyError(f"Optuna journal storage {path}: {e.strerror or e}") from None
    check_url(url)
    given, url = url, with_driver(url)
    engine_kwargs = None
    if url.startswith("postgresql"):
        engine_kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": CONNECT_TIMEOUT}}
    elif not url.startswith("sqlite"):
        engine_kwargs = {"pool_pre_ping": True}
    import sqlalchemy.exc

    from ..locks import creating

    for attempt in range(3):
        try:
            # creating: processes opening one new SQLite file at once would race to create its tables
            with warnings.catch_warnings(), creating(url):  # heartbeat and retries are flagged experimental; wanted
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=interval,
                    grace_period=grace,
                    heartbeat_stale_trial_callback=RetryStaleTrial(tracking_uri=tracking_uri),
                )
        except Exception as e:  # sqlalchemy raises many types for "cannot connect"
            racing = isinstance(e, (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError))
            if racing and attempt < 2:  # workers opening a fresh database at once race to create its tables
                time.sleep(1.0 + attempt)
                continue
            first = one_line(e)
            what = "failed" if racing else "is unreachable"
            raise CicyError(f"Optuna storage {redact(given)} {what}: {first[:200]}") from None


def count_states(study) -> dict | None:
    """Trials per state (``{TrialState: n}``): in one ``GROUP BY`` statement on a database, from the ``FinishedIndex``
    of a journal file (``open_storage``'s); None for other storages.

    ``study.get_trials`` would re-read every unfinished trial with all its attributes (Optuna's cached
    storage keeps only finished ones), once per budget check of every worker: with many workers, a cost
    that grows with the workers squared (``bench.scale``).
    """
    storage = compat.study_storage(study)
    if isinstance(storage, _heartbeat_journal_class()):
        return storage.count_states(storage.get_study_id_from_name(study.study_name))
    return compat.rdb_count_states(study)


class StudyLock:
    """Serializes creating one study (its Optuna study and MLflow parent run) across processes (``study.create``).

    PostgreSQL: a session advisory lock keyed on the study name (the server drops it with the
    connection of a process that dies); SQLite: an ``flock`` on a file next to the database (its name kept from
    when the lock also guarded the budget). Other storages get no lock. ``release`` is idempotent.
    """

    def __init__(self, url: str | None, study_name: str):
        self.url = with_driver(url or default_url())
        self.key = int.from_bytes(hashlib.sha256(f"cicy-search:{study_name}".encode()).digest()[:8], "big", signed=True)
        self._engine = None
        self._held = None

    @property
    def kind(self) -> str:
        if self.url.startswith("postgresql"):
            return "postgresql"
        if self.url.startswith("sqlite:///") and ":memory:" not in self.url:
            return "sqlite"
        return "none"

    def acquire(self) -> None:
        if self.kind == "postgresql":
            import sqlalchemy

            if self._engine is None:
                self._engine = sqlalchemy.create_engine(
                    self.url, pool_size=1, pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT}
                )
            conn = self._engine.connect()
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
            self._held = conn
        elif self.kind == "sqlite":
            path = Path(self.url.removeprefix("sqlite:///").split("?")[0] + ".budget-lock")
            handle = open(path, "a")
            fcntl.flock(handle, fcntl.LOCK_EX)
            self._held = handle

    def release(self) -> None:
        held, self._held = self._held, None
        if held is None:
            return
        if self.kind == "postgresql":
            import sqlalchemy

            try:
                held.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            finally:
                held.close()
        else:
            fcntl.flock(held, fcntl.LOCK_UN)
            held.close()

    def close(self) -> None:
        self.release()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
