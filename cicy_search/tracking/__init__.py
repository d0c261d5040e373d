"""MLflow bookkeeping: a run and its batched, background writes (``Run``, ``Uploader``).

Where runs go is ``store`` (URIs, clients, experiments, UI addresses), what every run is tagged with is
``context``; both are also reachable here as ``tracking.NAME``. The study-run links, the trial runner, the
study summary and the spool are the other submodules.

Everything goes through ``MlflowClient`` with explicit run ids, so any process (a study worker on
another host) can log into a run it did not create, e.g. a trial run nested under its study's run.
A ``Run`` given an ``Uploader`` makes every write in a background thread, in order, so none of it
is on the training thread's path; ``Uploader.flush`` waits for them and returns what failed.
"""

from __future__ import annotations

import atexit
import os
import queue
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable

from ..errors import CicyError, one_line
from .context import NOTE, SystemMetrics, config_note, context_tags, dataset_inputs, device, enable_system_metrics, git_commit, system_metrics_enabled  # noqa: F401 (tracking.NAME, as before the split)
from .store import (  # noqa: F401 (tracking.NAME, as before the split)
    ANSWER_SECONDS,
    HTTP_DEFAULTS,
    LOCAL_HOME,
    PATIENCE_SECONDS,
    check_experiment_name,
    check_reachable,
    check_sqlite,
    client,
    experiment_id,
    experiment_url,
    fast_sqlite_commits,
    hide_password,
    local_home,
    resolve_uri,
    run_url,
    ui_url,
)

#: MLflow writes that can wait are batched this often: a run's per-epoch metrics (while a long trial trains, not
#: all at its end; a short one's in one batch with its end) and a process's updates of the study's summary run.
#: Every request costs the tracking server CPU whatever it carries (``bench.scale``, docs/performance.md), so with
#: many workers the requests, not the values, are the load.
FLUSH_SECONDS = 15.0


_experiment_ids: dict[tuple[str, str], str] = {}  # (tracking URI, name) -> id, for the runs this process starts


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
