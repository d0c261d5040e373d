"""MLflow bookkeeping: where runs go, what every run is tagged with, and batched logging.

Everything goes through ``MlflowClient`` with explicit run ids, so any process (a study worker on
another host) can log into a run it did not create, e.g. a trial run nested under its study's run.
"""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from .errors import CicyError

LOCAL_HOME = "mlruns"


def local_home() -> Path:
    """The git-ignored folder for local state (MLflow's SQLite store and artifacts, the default Optuna storage)."""
    return Path(os.environ.get("CICY_SEARCH_HOME", LOCAL_HOME)).resolve()


def resolve_uri(uri: str | None = None) -> str:
    """Explicit URI, else ``MLFLOW_TRACKING_URI``, else a SQLite store inside ``mlruns/``."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    home = local_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"


def _check_reachable(uri: str) -> None:
    if uri.startswith(("http://", "https://")):
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5).read()
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise CicyError(f"MLflow tracking server {uri} is unreachable: {reason}") from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///") :]).parent
        if not folder.is_dir():
            raise CicyError(f"MLflow tracking store {uri}: folder {folder} does not exist")


@functools.lru_cache(maxsize=None)
def client(uri: str | None = None):
    """An ``MlflowClient`` for the resolved URI, checked to be reachable first."""
    from mlflow import MlflowClient

    uri = resolve_uri(uri)
    _check_reachable(uri)
    return MlflowClient(tracking_uri=uri)


def experiment_id(mlflow_client, name: str) -> str:
    """The id of experiment ``name``, created if missing (artifacts inside ``mlruns/`` for a local store)."""
    from mlflow.exceptions import MlflowException

    exp = mlflow_client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            mlflow_client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    location = None
    if mlflow_client.tracking_uri.startswith("sqlite:"):
        location = (local_home() / "artifacts").as_uri()
    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except MlflowException:  # another worker created it first
        return mlflow_client.get_experiment_by_name(name).experiment_id


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


class Run:
    """One MLflow run addressed by id: params, batched metrics, tags, artifacts, final status."""

    def __init__(self, mlflow_client, run_id: str):
        self.client = mlflow_client
        self.run_id = run_id
        self._pending: list = []
        self._last_flush = time.monotonic()

    @classmethod
    def start(
        cls,
        mlflow_client,
        experiment: str,
        *,
        run_name: str | None = None,
        tags: dict[str, str] | None = None,
        parent_run_id: str | None = None,
    ) -> "Run":
        tags = dict(tags or {})
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        run = mlflow_client.create_run(experiment_id(mlflow_client, experiment), tags=tags, run_name=run_name)
        return cls(mlflow_client, run.info.run_id)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None, *, flush_after: float = 0.0) -> None:
        """Queue metrics; they are written in one batch once ``flush_after`` seconds have passed."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending += [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        if time.monotonic() - self._last_flush >= flush_after:
            self.flush()

    def flush(self) -> None:
        for i in range(0, len(self._pending), 1000):
            self.client.log_batch(self.run_id, metrics=self._pending[i : i + 1000])
        self._pending = []
        self._last_flush = time.monotonic()

    def log_artifacts(self, files: dict[str, str | bytes], artifact_path: str | None = None) -> None:
        """Write ``{file name: content}`` to a temporary folder and log it in one call."""
        with tempfile.TemporaryDirectory() as tmp:
            for name, content in files.items():
                p = Path(tmp) / name
                p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content)
            self.client.log_artifacts(self.run_id, tmp, artifact_path)

    def log_folder(self, folder: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def end(self, status: str = "FINISHED", tags: dict[str, Any] | None = None) -> None:
        """Write queued metrics and the final tags in one batch, then close the run with ``status``."""
        from mlflow.entities import RunTag

        run_tags = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        if len(self._pending) <= 1000:
            self.client.log_batch(self.run_id, metrics=self._pending, tags=run_tags)
        else:
            self.flush()
            self.client.log_batch(self.run_id, tags=run_tags)
        self._pending = []
        self.client.set_terminated(self.run_id, status=status)


def config_yaml(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False)
