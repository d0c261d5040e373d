"""Where runs go: the local store's folder, the tracking URI, reaching a server or a SQLite store, the client,
experiments, and the MLflow UI's addresses of experiments and runs."""

from __future__ import annotations

import contextlib
import functools
import os
import time
from pathlib import Path

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
