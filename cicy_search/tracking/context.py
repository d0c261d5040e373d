"""What a run records about how it was made: host, device, code version and data set (tags and dataset inputs),
its config as the run's description, and MLflow's system metrics."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from ..config import dump_yaml
from ..errors import CicyError


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

    def __init__(self, run, interval: float | None = None):  # run: the ``tracking.Run`` it writes through
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
