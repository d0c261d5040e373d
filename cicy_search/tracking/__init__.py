"""MLflow bookkeeping: where runs go, what every run is tagged with, and batched logging.

Everything goes through ``MlflowClient`` with explicit run ids, so any process (a study worker on
another host) can log into a run it did not create, e.g. a trial run nested under its study's run.
A ``Run`` given an ``Uploader`` makes every write in a background thread, in order, so none of it
is on the training thread's path; ``Uploader.flush`` waits for them and returns what failed.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import json
import os
import platform
import queue
import socket
import subprocess
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable

from ..config import dump_yaml
from ..errors import CicyError, one_line

LOCAL_HOME = "mlruns"


def local_home(*, create: bool = False) -> Path:
    """The git-ignored folder for local state (MLflow's SQLite store and artifacts, the default Optuna storage).

    With ``create``, the folder is made if missing and must be writable: a read-only working folder is a one-line
    ``CicyError`` (a SQLite store there would fail on its first write, deep inside MLflow or Optuna).
    """
    home = Path(os.environ.get("CICY_SEARCH_HOME", LOCAL_HOME)).resolve()
    if create:
        hint = "run from a writable folder, or set CICY_SEARCH_HOME to one"
        try:
            home.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CicyError(f"{home}: cannot create the local store folder ({e.strerror or e}): {hint}") from None
        if not os.access(home, os.W_OK | os.X_OK):
            raise CicyError(f"{home}: the local store folder is not writable: {hint}")
    return home


def resolve_uri(uri: str | None = None) -> str:
    """Explicit URI, else ``MLFLOW_TRACKING_URI``, else a SQLite store inside ``mlruns/``."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{local_home(create=True) / 'mlflow.db'}"


#: A tracking server that does not answer its health check within ``ANSWER_SECONDS`` is asked again until
#: ``PATIENCE_SECONDS`` have passed: a busy server (many workers starting at once against a few ``mlflow server``
#: workers: docs/performance.md, ``bench.scale``) is not a missing one. A refused connection or an unknown host fails at once.
ANSWER_SECONDS, PATIENCE_SECONDS = 5.0, 60.0

#: MLflow's own defaults retry a request to a server that went away 7 times with doubling waits (minutes per write,
#: and a study's writes queue behind each other). These bound one write to a server that refuses connections at
#: about 6 s (3 retries, after 0, 2 and 4 s); the environment variables, when set, win. A study trial's write that
#: still fails goes into the study's spool, and its later writes follow it there without waiting (``spool.py``);
#: another write is reported.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}


def check_reachable(uri: str) -> None:
    if uri.startswith(("http://", "https://")):
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + PATIENCE_SECONDS
        while True:
            try:
                urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=ANSWER_SECONDS).read()
                return
            except (urllib.error.URLError, OSError) as e:
                reason = getattr(e, "reason", e)
                if not isinstance(reason, TimeoutError):
                    raise CicyError(f"MLflow tracking server {uri} is unreachable: {reason}") from None
                if time.monotonic() >= deadline:
                    raise CicyError(f"MLflow tracking server {uri} is unreachable: no answer in {PATIENCE_SECONDS:g} s") from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///") :]).parent
        if not folder.is_dir():
            raise CicyError(f"MLflow tracking store {uri}: folder {folder} does not exist")
        from ..locks import sqlite_path

        check_sqlite(sqlite_path(uri))


def check_sqlite(path: Path | None) -> None:
    """Refuse a damaged SQLite file (a store: MLflow's or Optuna's) before anything writes to it.

    The file is opened read-only and given SQLite's ``PRAGMA quick_check`` (every page and record, not the
    indexes' contents): overwritten pages are found here, with one line, instead of deep inside MLflow's schema
    migrations or Optuna's table creation, which would first write to the damaged file. A missing or empty file is
    left to be created.
    """
    import sqlite3
    import urllib.parse

    if path is None or not path.is_file() or path.stat().st_size == 0:
        return
    absent = [p for p in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")) if not p.exists()]
    try:
        with contextlib.closing(sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?mode=ro", uri=True, timeout=30)) as db:
            found = [row[0] for row in db.execute("PRAGMA quick_check(3)")]
    except sqlite3.DatabaseError as e:
        found = [str(e)]
    if found == ["ok"] and any(p.exists() for p in absent):
        # A read-only connection to a WAL database makes its -wal and -shm files and cannot remove them; the last
        # connection to close does, after a checkpoint that writes nothing (the log is empty): the folder is left
        # as it was (another process that opened it meanwhile keeps them, as it should).
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
            db.execute("PRAGMA schema_version").fetchone()
    if found != ["ok"]:
        detail = " ".join("; ".join(found).replace("*** in database main ***", "").split())[:200]
        raise CicyError(f"{path}: a damaged SQLite database ({detail}): nothing was written to it; restore it from a copy")


@functools.lru_cache(maxsize=None)
def client(uri: str | None = None):
    """An ``MlflowClient`` for the resolved URI, checked to be reachable first."""
    from mlflow import MlflowClient

    from ..locks import creating

    uri = resolve_uri(uri)
    check_reachable(uri)
    if uri.startswith(("http://", "https://")):
        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
    if uri.startswith("sqlite:"):
        fast_sqlite_commits()
    # On a server, MLflow's ``set_terminated`` reads the whole run back to print "View run ... at" on stdout: one more
    # request a run (with its params and metrics), and lines in the middle of a study's progress from the uploader's
    # thread. The commands print their own addresses (``study best``, ``study status``); a user may set it to false.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    from mlflow.exceptions import MlflowException

    with creating(uri):  # processes opening a new SQLite store at once race in its schema migrations
        try:
            return MlflowClient(tracking_uri=uri)
        except MlflowException as e:  # a scheme MLflow has no store for: it says so in a paragraph
            import re

            scheme = uri.partition(":")[0]
            listed = re.search(r"Supported URI schemes are: \[([^\]]*)\]", str(e))
            if not listed:
                raise CicyError(f"MLflow tracking URI {scheme}:...: {one_line(e, 200)}") from None
            known = ", ".join(f"{k}:" for k in re.findall(r"'([\w+.-]+)'", listed.group(1)))
            raise CicyError(f"MLflow tracking URI {scheme}:...: MLflow has no store for the scheme {scheme!r} (it knows {known})") from None


def check_experiment_name(name: str) -> None:
    """A name MLflow takes for an experiment (1 to 500 characters), printable so errors stay one line."""
    if not isinstance(name, str) or not name.strip() or len(name) > 500 or not name.isprintable():
        shown = repr(name) if len(repr(name)) <= 60 else repr(name)[:57] + "..."
        raise CicyError(f"MLflow experiment name {shown}: expected 1 to 500 printable characters")


@functools.lru_cache(maxsize=None)
def fast_sqlite_commits() -> None:
    """Every SQLite database SQLAlchemy opens in this process (MLflow's store, Optuna's storage) gets a
    write-ahead log and ``synchronous=NORMAL``.

    SQLite's default rollback journal syncs the disk two or three times per commit, and a trial makes a few dozen
    commits. In WAL mode a commit is an append (docs/performance.md has the measured costs);
    processes on one host still share the database safely, and a crash of the process loses nothing (one of
    the machine may lose the last commits, never the database). WAL needs a local file system, as SQLite
    shared by several processes always did.
    """
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _pragmas(dbapi_connection, _record):
        if isinstance(dbapi_connection, sqlite3.Connection):
            try:
                dbapi_connection.execute("PRAGMA journal_mode=WAL")
                dbapi_connection.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error:  # another process holds it in the middle of a change: its default then
                pass


#: MLflow writes that can wait are batched this often: a run's per-epoch metrics (while a long trial trains, not
#: all at its end; a short one's in one batch with its end) and a process's updates of the study's summary run.
#: Every request costs the tracking server CPU whatever it carries (``bench.scale``, docs/performance.md), so with
#: many workers the requests, not the values, are the load.
FLUSH_SECONDS = 15.0

_experiment_ids: dict[tuple[str, str], str] = {}  # (tracking URI, name) -> id, for the runs this process starts


def experiment_id(mlflow_client, name: str) -> str:
    """The id of experiment ``name``, created if missing (artifacts next to a SQLite store's file)."""
    from mlflow.exceptions import MlflowException

    check_experiment_name(name)

    exp = mlflow_client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            mlflow_client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    from ..locks import sqlite_path

    location = None
    database = sqlite_path(mlflow_client.tracking_uri)
    if database is not None:  # beside the store it belongs to, not in whatever folder the command ran from
        location = (database.resolve().parent / "artifacts").as_uri()
    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except MlflowException as e:
        exp = mlflow_client.get_experiment_by_name(name)
        if exp is not None:  # another worker created it first
            return exp.experiment_id
        first = (str(e.message if hasattr(e, "message") else e).strip().splitlines() or ["refused"])[0][:200]
        raise CicyError(f"MLflow experiment {name[:60]!r}: {first}") from None


@functools.lru_cache(maxsize=None)
def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.lru_cache(maxsize=None)
def device() -> str:
    """``cpu`` or the name of the first visible GPU (imports TensorFlow; call only while training)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "cpu"
    details = tf.config.experimental.get_device_details(gpus[0])
    return f"gpu:{details.get('device_name', gpus[0].name)}"


def context_tags(dataset: str, dataset_hash: str) -> dict[str, str]:
    """Where and from what a run was made: host, process, device, data set and code version."""
    return {
        "host": socket.gethostname(),
        "process": str(os.getpid()),
        "platform": platform.platform(),
        "device": device(),
        "dataset": dataset,
        "dataset_hash": dataset_hash,
        "mlflow.source.git.commit": git_commit(),
        "git_commit": git_commit(),
    }


def _param_value(v: Any) -> str:
    return str(v) if not isinstance(v, str) else v


class Uploader:
    """MLflow writes off the training thread: one background thread runs them in the order submitted.

    ``submit`` returns a ``Future``; a write that fails is kept (as one line) until ``flush``, which waits
    for everything submitted so far and returns those lines. The thread starts on the first submit and
    is flushed once more when the interpreter exits.

    Example::

        uploader = Uploader()
        uploader.submit(client.log_batch, run_id, metrics=metrics, what="epoch metrics")
        for line in uploader.flush():
            print("warning:", line)
    """

    def __init__(self):
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._errors: list[str] = []
        self.cpu_seconds = 0.0  # CPU time the thread has spent on writes (what they take from training: bench.tracking)

    def submit(self, fn: Callable, *args, what: str = "", **kwargs) -> Future:
        future: Future = Future()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="mlflow-uploader", daemon=True)
                self._thread.start()
        self._queue.put((future, fn, args, kwargs, what))
        return future

    def _work(self) -> None:
        while True:
            future, fn, args, kwargs, what = self._queue.get()
            try:
                if future.set_running_or_notify_cancel():
                    started = time.thread_time()
                    try:
                        future.set_result(fn(*args, **kwargs))
                    except BaseException as exc:  # kept for flush; the thread goes on with the next write
                        if not getattr(exc, "_cicy_reported", False):
                            with self._lock:
                                self._errors.append(f"{what}: {one_line(exc)}" if what else one_line(exc))
                            try:
                                exc._cicy_reported = True  # the same error seen again by a later write of its run
                            except AttributeError:
                                pass
                        future.set_exception(exc)
                    finally:
                        self.cpu_seconds += time.thread_time() - started
            finally:
                self._queue.task_done()

    def flush(self, timeout: float | None = None) -> list[str]:
        """Wait until every write submitted so far has run; returns (and forgets) the ones that failed."""
        if self._thread is not None:
            marker = self.submit(lambda: None)
            try:
                marker.result(timeout=timeout)
            except TimeoutError:
                with self._lock:
                    self._errors.append(f"{self._queue.qsize()} MLflow writes still queued after {timeout:g} s")
        with self._lock:
            errors, self._errors = self._errors, []
        return errors


_UPLOADER: Uploader | None = None
#: How long the exit waits for queued MLflow writes: a normal exit lets them finish; after a signal (Ctrl-C,
#: SIGTERM) every wait on them together (the running trial's link, the study's summary, the exit) gets
#: ``INTERRUPTED_FLUSH_SECONDS`` from the signal, since a tracking store that went away would hold the process for
#: minutes. Writes of a study's trial runs not done by then are kept in its spool when the server was known to be
#: away (``spool.py``), else repaired when the study resumes (``links.repair``).
EXIT_FLUSH_SECONDS, INTERRUPTED_FLUSH_SECONDS = 120.0, 5.0
_signalled: list[float] = []  # when the last signal came (monotonic), once one did


_INTERRUPTED_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(INTERRUPTED_FLUSH_SECONDS))}
_before_interrupt: dict[str, str | None] = {}


def interrupted(now: bool = True) -> None:
    """The process is ending on a signal (called by the CLI's handlers): MLflow requests from now on are tried once
    with a short timeout, and the waits for queued writes share seconds (``wait_seconds``), so that a tracking store
    that went away cannot hold the process for minutes. ``now=False`` gives requests their settings back (the CLI
    run in-process, by tests, returns to its caller); the exit's wait stays short."""
    if now and not _before_interrupt:
        _before_interrupt.update({k: os.environ.get(k) for k in _INTERRUPTED_HTTP})
        os.environ.update(_INTERRUPTED_HTTP)
        _signalled[:] = [time.monotonic()]
    elif not now:
        for k, v in _before_interrupt.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _before_interrupt.clear()


def wait_seconds(default: float | None = None) -> float | None:
    """How long a wait for queued MLflow writes may take: ``default``, or after a signal what is left of
    ``INTERRUPTED_FLUSH_SECONDS`` since it came."""
    if not _signalled:
        return default
    return max(0.0, _signalled[0] + INTERRUPTED_FLUSH_SECONDS - time.monotonic())


def _flush_at_exit() -> None:
    if _UPLOADER is not None:
        _UPLOADER.flush(wait_seconds(EXIT_FLUSH_SECONDS))


def uploader() -> Uploader:
    """The process's background uploader (flushed at exit, so nothing queued is lost on a normal exit)."""
    global _UPLOADER
    if _UPLOADER is None:
        _UPLOADER = Uploader()
        atexit.register(_flush_at_exit)
    return _UPLOADER


def run_status(exc: BaseException) -> tuple[str, str]:
    """MLflow status and ``state`` tag for a run that ended with ``exc``."""
    import optuna

    if isinstance(exc, optuna.TrialPruned):
        return "KILLED", "pruned"
    if isinstance(exc, KeyboardInterrupt):
        return "FAILED", "interrupted"
    return "FAILED", "failed"


#: MLflow's limits on one ``log_batch``: values of each kind, and in all.
BATCH_LIMITS = {"metrics": 1000, "params": 100, "tags": 100}
BATCH_TOTAL = 1000


def batches(metrics=(), params=(), tags=()) -> list[dict[str, list]]:
    """``log_batch`` keyword arguments for the given values in as few requests as MLflow's limits allow.

    Values keep their order within each kind; each request takes as many params and tags as it may (their
    limits are the small ones), then metrics. At least one batch, possibly empty, is returned.
    """
    left = {"params": list(params), "tags": list(tags), "metrics": list(metrics)}
    out = []
    while True:
        batch, room = {}, BATCH_TOTAL
        for kind, values in left.items():
            take = min(len(values), BATCH_LIMITS[kind], room)
            if take:
                batch[kind], left[kind], room = values[:take], values[take:], room - take
        if batch or not out:
            out.append(batch)
        if not any(left.values()):
            return out


class Run:
    """One MLflow run addressed by id: params, batched metrics, tags, inputs, artifacts, final status.

    Without an uploader every call writes at once. With one, ``start`` and every later call only queue
    the write: ``run_id`` then waits for the run to exist, ``later`` queues any other work behind this
    run's writes, and a write that fails is reported by ``Uploader.flush`` and named in the run's
    ``tracking_errors`` tag when it ends. With a ``spool.Spool`` (a study's trial runs), a write the tracking
    server does not answer goes into the spool with every later one of the run, and ``run_id`` is None for a run
    that could not be created (``spool.py``).

    As a context manager it ends the run when the block ends: FINISHED (with ``end_tags``), or, when the
    block raised, the status ``run_status`` gives (KILLED for a pruned trial, FAILED otherwise) with the
    ``state`` tag and the error's first line as ``failure_reason``; the error goes on.

        with tracking.Run.start(client, "experiment", run_name="recipe") as run:
            run.log_params({"runs": 3})
    """

    def __init__(
        self, mlflow_client, run_id: str | None, *, uploader: Uploader | None = None, name: str = "", artifact_uri: str | None = None,
        spool=None, trial: int | None = None,
    ):  # fmt: skip
        self.client = mlflow_client
        self._run_id = run_id
        self._artifact_uri = artifact_uri  # known for a run created here: artifacts go there without looking the run up
        self._created: Future | None = None
        self.uploader = uploader
        self.name = name or (run_id or "")
        self.spool, self.trial = spool, trial  # where writes go while the server is away; the trial this run is
        self.entry = None  # this run's spool file, once a write went there (all later ones follow it)
        self._pending: list = []  # metrics, written in batches (``log_metrics``)
        self._pending_params: list = []  # params written with them (``log_params(with_metrics=True)``)
        self._last_flush = time.monotonic()
        self.end_tags: dict[str, Any] = {}  # added to the final tags when ``end`` is written (work queued before it may add some)
        self.errors: list[str] = []

    @property
    def run_id(self) -> str | None:
        if self._run_id is None and self._created is not None:
            info = self._created.result()
            if info is None:  # spooled before it could be created
                return None
            self._run_id, self._artifact_uri = info.run_id, info.artifact_uri
        return self._run_id

    @classmethod
    def start(
        cls,
        mlflow_client,
        experiment: str,
        *,
        run_name: str | None = None,
        tags: dict[str, str] | None = None,
        parent_run_id: str | None = None,
        uploader: Uploader | None = None,
        spool=None,
        trial: int | None = None,
    ) -> "Run":
        """Create the run (with an uploader: in its thread). ``spool``, ``trial``: see the class."""
        from . import spool as spooling

        tags = dict(tags or {})
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id

        key = (mlflow_client.tracking_uri, experiment)

        def create():
            known = _experiment_ids.get(key)
            if known is not None:  # a trial's run: no lookup of the experiment (one request fewer per trial)
                from mlflow.exceptions import MlflowException

                try:
                    return mlflow_client.create_run(known, tags=tags, run_name=run_name).info
                except MlflowException as e:  # deleted (or gone) since: look it up again, which restores a deleted one
                    if spooling.unreachable(e):
                        raise
                    _experiment_ids.pop(key, None)
            _experiment_ids[key] = found = experiment_id(mlflow_client, experiment)
            return mlflow_client.create_run(found, tags=tags, run_name=run_name).info

        run = cls(mlflow_client, None, uploader=uploader, name=run_name or "", spool=spool, trial=trial)

        def create_or_spool():
            if spool is None:
                return create()
            if spooling.down(mlflow_client.tracking_uri) is None:
                try:
                    return create()
                except Exception as e:
                    if not spooling.unreachable(e):
                        raise
                    spooling.went_down(mlflow_client.tracking_uri, e)
            run.entry = spool.entry(run_id=None, create={"experiment": experiment, "run_name": run_name, "tags": tags}, trial=trial)
            return None

        if uploader is None:
            info = create_or_spool()
            if info is not None:
                run._run_id, run._artifact_uri, run.name = info.run_id, info.artifact_uri, run_name or info.run_id
            return run
        run._created = uploader.submit(create_or_spool, what=f"MLflow run {run_name or ''} in {experiment}: create")
        return run

    def later(self, fn: Callable[[], Any], what: str = "") -> Future | Any:
        """``fn()`` now, or, with an uploader, queued behind this run's earlier writes (returns its ``Future``)."""
        if self.uploader is None:
            return fn()

        def guarded():
            if self._created is not None and self._created.exception() is not None:
                raise self._created.exception()  # reported once, by the create
            try:
                return fn()
            except Exception as e:
                self.errors.append(f"{what}: {one_line(e)}")
                raise

        return self.uploader.submit(guarded, what=f"MLflow run {self.name or self._run_id}: {what}")

    def write(self, op: dict) -> None:
        """One write (a record ``apply`` takes), now, in the calling thread; with a spool, into it once the server did
        not answer this run or is known to be away (``spool.py``)."""
        from . import spool as spooling

        uri = self.client.tracking_uri
        if self.entry is None:
            if spooling.down(uri) is None:
                try:
                    return self.apply(op)
                except Exception as e:
                    if self.spool is None or not spooling.unreachable(e):
                        raise
                    spooling.went_down(uri, e)
            if self.spool is None:
                raise CicyError(f"MLflow tracking server {hide_password(uri)} is away ({spooling.down(uri)}): not written")
            self.entry = self.spool.entry(run_id=self.run_id, create=None, trial=self.trial)
        self.entry.add(op)

    def apply(self, op: dict) -> None:
        """One write now: ``{"op": "batch", "metrics", "params", "tags"}`` (MLflow entities), ``{"op": "inputs",
        "datasets"}``, ``{"op": "artifacts", "folder", "path"}`` (a folder's files) or ``{"op": "end", "status",
        "end_time"}``: what a run's spool file records, so a replay writes exactly what the run would have."""
        kind = op["op"]
        if kind == "batch":
            self.log_batch(op.get("metrics", ()), op.get("params", ()), op.get("tags", ()))
        elif kind == "inputs":
            self.client.log_inputs(self.run_id, datasets=op["datasets"])
        elif kind == "artifacts":
            self._upload_now(op["folder"], op.get("path"))
        elif kind == "end":
            self.client.set_terminated(self.run_id, status=op["status"], end_time=op.get("end_time"))
        else:
            raise ValueError(f"unknown MLflow write {kind!r}")

    def log_params(self, params: dict[str, Any], *, with_metrics: bool = False) -> None:
        """Write params now, or (``with_metrics``) in one request with the next metric batch or the run's end."""
        from mlflow.entities import Param

        items = [Param(k, _param_value(v)) for k, v in params.items()]
        if with_metrics:
            self._pending_params += items
        else:
            self.later(lambda: self.write({"op": "batch", "params": items}), "params")

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        self.later(lambda: self.write({"op": "batch", "tags": items}), "tags")

    def log_batch(self, metrics=(), params=(), tags=()) -> None:
        """Write now, in the calling thread, in as few requests as MLflow's limits allow (``batches``)."""
        for batch in batches(metrics, params, tags):
            if batch:
                self.client.log_batch(self.run_id, **batch)

    def log_inputs(self, datasets: list) -> None:
        """Dataset inputs (``dataset_inputs``): what the run's Dataset column and filter show."""
        if datasets:
            self.later(lambda: self.write({"op": "inputs", "datasets": datasets}), "datasets")

    def log_metrics(self, metrics: dict[str, float], step: int | None = None, *, flush_after: float = 0.0) -> None:
        """Queue metrics; they are written in one batch once ``flush_after`` seconds have passed."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending += [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        if time.monotonic() - self._last_flush >= flush_after:
            self.flush()

    def flush(self) -> None:
        """Write the queued metrics (and params queued ``with_metrics``) now."""
        (metrics, self._pending), (params, self._pending_params) = (self._pending, []), (self._pending_params, [])
        self._last_flush = time.monotonic()
        if metrics or params:
            self.later(lambda: self.write({"op": "batch", "metrics": metrics, "params": params}), "metrics")

    def log_artifacts(self, files: dict[str, str | bytes] | Callable[[], dict], artifact_path: str | None = None) -> None:
        """Write ``{file name: content}`` to a temporary folder and log it in one call; ``files`` may be a function
        returning them, called when the write runs (with an uploader, in its thread)."""

        def write():
            with tempfile.TemporaryDirectory() as tmp:
                for name, content in (files() if callable(files) else files).items():
                    p = Path(tmp) / name
                    p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content)
                self.upload(tmp, artifact_path)

        self.later(write, "artifacts")

    def log_folder(self, folder: str | Path, artifact_path: str | None = None) -> None:
        """Log a folder; with an uploader it must stay in place until the upload ran."""
        self.later(lambda: self.upload(folder, artifact_path), "artifacts")

    def upload(self, folder: str | Path, artifact_path: str | None = None) -> None:
        """Log a folder's files now, in the calling thread (or copy them into the spool: ``write``)."""
        self.write({"op": "artifacts", "folder": str(folder), "path": artifact_path})

    def _upload_now(self, folder: str | Path, artifact_path: str | None = None) -> None:
        """For a run started here the files go straight to its artifact location (``MlflowClient.log_artifacts``
        first reads the whole run, metrics and params, to find it)."""
        run_id = self.run_id
        if self._artifact_uri is None:
            self.client.log_artifacts(run_id, str(folder), artifact_path)
            return
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        repository = get_artifact_repository(self._artifact_uri, tracking_uri=self.client.tracking_uri)
        repository.log_artifacts(str(folder), artifact_path)

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.end("FINISHED")
            return
        status, state = run_status(exc)
        try:
            self.end(status, tags={"state": state} if state == "pruned" else {"state": state, "failure_reason": one_line(exc)})
        except Exception:  # the tracking store itself is gone; the original error matters more
            pass

    def end(self, status: str = "FINISHED", tags: dict[str, Any] | None = None) -> None:
        """Write queued metrics, params and the final tags in one batch, then close the run with ``status``."""
        from mlflow.entities import RunTag

        (metrics, self._pending), (params, self._pending_params) = (self._pending, []), (self._pending_params, [])

        def write():
            final = {**self.end_tags, **(tags or {})}
            if self.errors:
                final["tracking_errors"] = "; ".join(self.errors)[:5000]
            self.write({"op": "batch", "metrics": metrics, "params": params, "tags": [RunTag(k, str(v)) for k, v in final.items()]})
            self.write({"op": "end", "status": status, "end_time": int(time.time() * 1000)})

        self.later(write, f"end ({status})")


def dataset_inputs(data: dict, dataset_hash: str, index: dict[str, Any]) -> list:
    """MLflow dataset inputs for a run trained on the splits ``index`` of the list ``data["dataset"]``.

    One input per split (contexts ``train``, ``validation``, ``test``), all named after the list; each
    digest is the start of the sha256 of the list's sha256 and the split's row indices, so two runs show
    the same digest exactly when they saw the same rows. The profile holds the list's full sha256, the
    split's size, fractions and seed.
    """
    import numpy as np
    from mlflow.entities import Dataset, DatasetInput, InputTag

    from ..data import DATASETS

    contexts = {"train": "training", "val": "validation", "test": "test"}
    name = data["dataset"]
    uri = f"cicy_search/data/{DATASETS[name]}" if name in DATASETS else Path(name).resolve().as_uri()  # a list on disk
    source = json.dumps({"uri": uri, "sha256": dataset_hash})
    out = []
    for split, context in contexts.items():
        if split not in index:
            continue
        rows = np.asarray(index[split], dtype=np.int64)
        digest = hashlib.sha256(f"{dataset_hash}:{split}:".encode() + rows.tobytes()).hexdigest()[:16]
        profile = {
            "num_rows": int(len(rows)),
            "split": split,
            "sha256": dataset_hash,
            "fractions": {k: data.get(k) for k in ("train", "val", "test")},
            "seed": data.get("seed"),
            "stratify": data.get("stratify"),
            "limit": data.get("limit"),
            "keep_products": data.get("keep_products"),
            "targets": list(data.get("targets") or []),
        }
        dataset = Dataset(name, digest, "local", source, None, json.dumps(profile))
        out.append(DatasetInput(dataset, [InputTag("mlflow.data.context", context)]))
    return out


class SystemMetrics:
    """CPU, memory, disk, network and (with nvidia-ml-py) GPU use, sampled into a run's ``system/*`` metrics.

    MLflow's own monitors (``mlflow.enable_system_metrics_logging``) do the measuring; this samples them
    every ``interval`` seconds and once more at ``stop``, so even a trial shorter than the interval gets
    a point, and writes through the run (so, in a study, through the background uploader).
    """

    def __init__(self, run: Run, interval: float | None = None):
        from mlflow.environment_variables import MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self.run = run
        self.interval = interval or MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL.get() or 2.0
        self.monitor = SystemMetricsMonitor("", sampling_interval=self.interval, tracking_uri=run.client.tracking_uri)
        self._step = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="system-metrics", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        self.monitor.collect_metrics()
        metrics = self.monitor.aggregate_metrics()
        for m in self.monitor.monitors:
            m.clear_metrics()
        metrics = {f"system/{k}": v for k, v in metrics.items()}
        if metrics:
            self.run.later(lambda step=self._step: self._write(metrics, step), "system metrics")
            self._step += 1

    def _write(self, metrics: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.run.write({"op": "batch", "metrics": [Metric(k, float(v), now, step) for k, v in metrics.items()]})

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def system_metrics_enabled() -> bool:
    """Whether runs sample system metrics: ``mlflow.enable_system_metrics_logging()`` (the workers'
    ``--system-metrics``) or ``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=true``."""
    from mlflow.environment_variables import MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING

    return bool(MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.get())


def enable_system_metrics() -> None:
    """Turn system metrics on for this process's runs; they need psutil (and nvidia-ml-py for GPUs)."""
    import importlib.util

    import mlflow

    if importlib.util.find_spec("psutil") is None:
        raise CicyError("--system-metrics needs psutil: pip install psutil (and nvidia-ml-py for GPU metrics)")
    mlflow.enable_system_metrics_logging()


def hide_password(uri: str) -> str:
    """The URI with any password hidden, for messages."""
    import re

    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", uri)


def ui_url(tracking_uri: str) -> str | None:
    """The MLflow UI address of a tracking server (credentials removed); None for a local store."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    import re

    return re.sub(r"://[^/@]*@", "://", tracking_uri).rstrip("/")


def experiment_url(ui: str, experiment_id: str) -> str:
    """The runs table of an experiment in the MLflow UI at ``ui``."""
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs"


def run_url(ui: str, experiment_id: str, run_id: str) -> str:
    return f"{experiment_url(ui, experiment_id)}/{run_id}"


#: The tag MLflow shows as a run's description.
NOTE = "mlflow.note.content"


def config_note(config: dict) -> dict[str, str]:
    """A run's config as its description (the ``mlflow.note.content`` tag, shown on the run's page), to be set
    when the run is created: no request of its own. Empty when it is longer than MLflow allows a tag (8,000
    characters); ``config.yaml`` is then logged as an artifact instead (``tracking.runner.run_tracked``)."""
    from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

    note = (
        "Config of this run: to train it again, save it as `config.yaml` and run `cicy-search train config.yaml`.\n\n"
        f"```yaml\n{dump_yaml(config)}```\n"
    )
    return {NOTE: note} if len(note) <= MAX_TAG_VAL_LENGTH else {}
