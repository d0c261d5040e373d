"""A local spool for a study trial's MLflow writes while its tracking server is away.

A trial's run is written through ``tracking.Run``. When one of its writes fails because the server does not
answer (``unreachable``), that write and every later one of the run go, in order, into one JSON file per run in
the study's spool folder (``folder``), rewritten atomically (temporary file, fsync, rename) after each write; a
model or other artifact folder is copied beside it. Training goes on meanwhile, and a run that starts while the
server is known to be away is spooled from its creation without trying it. ``links.replay`` writes the files of
runs that ended back into the store, in order, recording in each file how far it got, so a replay interrupted or
run twice writes nothing twice; the file goes once its run is complete. A run created from the spool is found by
its ``cicy.spool`` tag, and the trial is linked to it through the study's user attribute ``mlflow_run_id:<number>``
(Optuna keeps a finished trial's own attributes fixed: ``links.run_id``).

Replays happen after each trial of the process that spooled (once the server answers its health check), at the
end of its study, and when any process resumes the study (``links.resume``); a process sharing the spool folder
(``CICY_SPOOL_DIR`` on a shared file system) replays other processes' files too. Each file is replayed by one
process at a time (an ``flock`` on the folder).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable

#: Where spool folders go: ``$CICY_SPOOL_DIR/STUDY`` when set (a folder that workers on several hosts share), else
#: beside a file storage (``optuna.db`` -> ``optuna.db.spool/STUDY``; a journal likewise), else
#: ``$CICY_SEARCH_HOME/spool/STUDY`` (``mlruns/spool/STUDY``).
DIR_ENV = "CICY_SPOOL_DIR"

#: A study stops (one ``error:`` line, exit 2, its spool kept) once this many trials in a row of one process started
#: while the tracking server did not answer (their runs spooled from their creation); ``CICY_SPOOL_MAX_TRIALS``
#: overrides it.
MAX_TRIALS = 20
MAX_TRIALS_ENV = "CICY_SPOOL_MAX_TRIALS"

TAG = "cicy.spool"  # on a run created from the spool: its file's key, so a replay finds the run it made before

_down: dict[str, str] = {}  # tracking URI -> why it is taken to be away, for this process (``went_down``)


def folder(storage_url: str, study_name: str, home: Path) -> Path:
    """The spool folder of study ``study_name`` in the Optuna storage ``storage_url`` (see ``DIR_ENV``; ``home``:
    ``tracking.local_home()``)."""
    from ..locks import sqlite_path

    name = urllib.parse.quote(study_name, safe="")
    if os.environ.get(DIR_ENV):
        return Path(os.environ[DIR_ENV]).resolve() / name
    path = sqlite_path(storage_url)
    if path is None and (storage_url.startswith("journal:") or storage_url.endswith(".log")):
        path = Path(storage_url.removeprefix("journal:"))
    if path is not None:
        return path.resolve().parent / f"{path.name}.spool" / name
    return Path(home) / "spool" / name


def max_trials() -> int:
    value = os.environ.get(MAX_TRIALS_ENV)
    return int(value) if value and value.strip().isdigit() and int(value) > 0 else MAX_TRIALS


def unreachable(exc: BaseException) -> bool:
    """Whether an MLflow write failed because the tracking server did not answer (refused, timed out, 5xx after
    MLflow's retries), not because it refused the write."""
    import requests

    seen = exc
    while seen is not None:
        if isinstance(seen, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError, TimeoutError)):
            return True
        text = str(seen)
        if "API request to" in text and any(s in text for s in ("Max retries exceeded", "timeout", "Connection", "connection")):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def down(uri: str) -> str | None:
    """Why this process takes the tracking server ``uri`` to be away (its first failed write), None if it does not."""
    return _down.get(uri)


def went_down(uri: str, exc: BaseException) -> None:
    from ..errors import one_line

    _down.setdefault(uri, one_line(exc, 200))


def answers(uri: str, seconds: float = 2.0) -> bool:
    """One quick look at a tracking server's ``/health`` (no retries); clears the away mark when it answers."""
    import urllib.request

    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=seconds).read()
        except OSError:
            return False
    _down.pop(uri, None)
    return True


# What a run's writes are, as records: ``tracking.Run.apply`` makes them; here they become JSON and back.


def _encode(op: dict) -> dict:
    out = dict(op)
    if op["op"] == "batch":
        out["metrics"] = [[m.key, m.value, m.timestamp, m.step] for m in op.get("metrics", ())]
        out["params"] = [[p.key, p.value] for p in op.get("params", ())]
        out["tags"] = [[t.key, t.value] for t in op.get("tags", ())]
    elif op["op"] == "inputs":
        out["datasets"] = [
            {
                "dataset": {k: getattr(d.dataset, k) for k in ("name", "digest", "source_type", "source", "schema", "profile")},
                "tags": [[t.key, t.value] for t in d.tags],
            }
            for d in op["datasets"]
        ]
    return out


def decode(op: dict, files: Path) -> dict:
    """A spooled record as ``tracking.Run.apply`` takes it (artifact folders inside ``files``)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag

    out = dict(op)
    if op["op"] == "batch":
        out["metrics"] = [Metric(k, float(v), int(t), int(s)) for k, v, t, s in op["metrics"]]
        out["params"] = [Param(k, v) for k, v in op["params"]]
        out["tags"] = [RunTag(k, v) for k, v in op["tags"]]
    elif op["op"] == "inputs":
        out["datasets"] = [
            DatasetInput(Dataset(**d["dataset"]), [InputTag(k, v) for k, v in d["tags"]]) for d in op["datasets"]
        ]
    elif op["op"] == "artifacts":
        out["folder"] = str(files / op["folder"])
    return out


def _write_json(path: Path, data: dict) -> None:
    """``path`` holds ``data`` or what it held before, whatever happens (temporary file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Entry:
    """One run's spool file: what is known of the run (its id, or how to create it) and its writes in order."""

    def __init__(self, path: Path, data: dict):
        self.path, self.data = path, data

    @property
    def files(self) -> Path:
        return self.path.with_suffix(".files")

    @property
    def closed(self) -> bool:
        """Whether the run ended (its last write is the end): only then is it replayed."""
        return bool(self.data["ops"]) and self.data["ops"][-1]["op"] == "end"

    def add(self, op: dict) -> None:
        op = _encode(op)
        if op["op"] == "artifacts":  # the folder is a temporary one: copied into the spool first
            name = str(len(self.data["ops"]))
            shutil.copytree(op["folder"], self.files / name, dirs_exist_ok=True)
            op["folder"] = name
        self.data["ops"].append(op)
        _write_json(self.path, self.data)

    def save(self) -> None:
        _write_json(self.path, self.data)

    def remove(self) -> None:
        shutil.rmtree(self.files, ignore_errors=True)
        self.path.unlink(missing_ok=True)


class Spool:
    """The spool folder of one study, for this process's trial runs and for replays.

    Args:
        path: the folder (``folder``), made when the first run is spooled.
        uri: the tracking URI the study's runs go to.
    """

    def __init__(self, path: Path, uri: str):
        self.path, self.uri = Path(path), uri
        self.in_a_row = 0  # runs this process started (and spooled) since the server last answered

    def entry(self, *, run_id: str | None, create: dict | None, trial: int | None) -> Entry:
        """A new file for a run: ``run_id`` when it exists, else ``create`` (experiment, run name, tags)."""
        self.path.mkdir(parents=True, exist_ok=True)
        key = f"{time.time_ns()}-{os.getpid()}-trial-{trial if trial is not None else 'none'}"
        self.in_a_row += create is not None
        data = {"version": 1, "key": key, "uri": self.uri, "trial": trial, "run_id": run_id, "create": create,
                "host": socket.gethostname(), "pid": os.getpid(), "ops": [], "done": 0}  # fmt: skip
        entry = Entry(self.path / f"{key}.json", data)
        entry.save()
        return entry

    def entries(self) -> list[Entry]:
        """The files in the folder, oldest first (one that cannot be read is left for a person to look at)."""
        found = []
        for path in sorted(self.path.glob("*.json")) if self.path.is_dir() else []:
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(path.read_text())
                if isinstance(data, dict) and data.get("version") == 1:
                    found.append(Entry(path, data))
        return found

    def waiting(self) -> bool:
        """Whether any run's writes are in the folder (a look at the folder, no request)."""
        return self.path.is_dir() and any(self.path.glob("*.json"))

    def pending(self) -> dict[int | None, str]:
        """Trials whose runs wait here: trial number -> the run id, or "not created"."""
        return {e.data["trial"]: e.data["run_id"] or "not created" for e in self.entries()}

    def replay(self, write: Callable[[Entry], None], abandoned: Callable[[Entry], bool] = lambda entry: False) -> list[int]:
        """``write`` each file of a run that ended (or was ``abandoned`` by its writer), oldest first, then remove it;
        returns their trial numbers. Stops at the first write the server does not answer: the rest waits for the next
        replay. One process replays a folder at a time; ``links.replay`` writes the runs into MLflow."""
        replayed: list[int] = []
        if not self.path.is_dir():
            return replayed
        fd = os.open(self.path, os.O_RDONLY)  # the folder: its files are rewritten by rename, so it is what is locked
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return replayed  # another process replays this spool now
            for entry in self.entries():
                if not entry.closed and not abandoned(entry):
                    continue
                try:
                    write(entry)
                    entry.remove()
                except Exception as e:
                    if not unreachable(e):
                        raise
                    went_down(self.uri, e)
                    break
                if entry.data["trial"] is not None:
                    replayed.append(entry.data["trial"])
        finally:
            os.close(fd)  # closing drops the lock
        if down(self.uri) is None:
            self.in_a_row = 0
        elif replayed:  # it answered the writes: this process stops spooling new runs
            _down.pop(self.uri, None)
            self.in_a_row = 0
        return replayed


def describe(pending: dict[Any, str], folder: Path) -> list[str]:
    """``study status`` lines for the runs waiting in a spool."""
    if not pending:
        return []
    lines = [f"{len(pending)} trials whose MLflow writes wait in the spool {folder} (written when a study run or worker "
             "of this study finds the tracking server answering):"]  # fmt: skip
    lines += [f"  trial {number}: run {run_id}" for number, run_id in sorted(pending.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))]
    return lines
