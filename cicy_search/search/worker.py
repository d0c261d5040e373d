"""Study workers: any number of processes on any number of hosts share one study until its budget.

``cicy-search study create`` makes the study once; each ``cicy-search worker`` joins it, takes trials
until the study holds its budget of finished trials (see ``budget.optimize_to_budget``) and leaves.

Order matters here: the device settings go into the environment before TensorFlow is imported, and
the storage and tracking server are checked before it is imported too, so a worker pointed at a
wrong address fails in seconds with one line.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
from dataclasses import dataclass

from . import study as studies
from .budget import count_finished
from .. import tracking
from ..errors import CicyError, NoStudy
from .storage import default_url, redact
from .studyfile import StudySpec, check_budget
from ..tracking import links, spool

def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_index() -> int:
    """This worker's index, for distinct sampler seeds: the Slurm array task or Kubernetes completion
    index when there is one, else a number derived from host and process."""
    for env in ("CICY_WORKER_INDEX", "SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX", "SLURM_PROCID"):
        if os.environ.get(env, "").isdigit():
            return int(os.environ[env]) + 1
    return 1 + int.from_bytes(hashlib.sha256(worker_id().encode()).digest()[:3], "big")


def configure_environment(*, gpu: str | None = None, threads: int | None = None, gpu_memory_mb: int | None = None) -> None:
    """Set what TensorFlow reads when it starts: the one visible GPU, memory growth, thread counts.

    Must run before TensorFlow is imported (``--gpu`` would otherwise have no effect).

    Args:
        gpu: a CUDA device index (or UUID) for ``CUDA_VISIBLE_DEVICES``; several workers may name the
            same one to share a large GPU.
        threads: CPU threads for TensorFlow's intra- and inter-op pools (and OpenMP).
        gpu_memory_mb: cap this worker's GPU memory instead of letting it grow (packing workers).
    """
    if "tensorflow" in sys.modules and (gpu, threads, gpu_memory_mb) != (None, None, None):
        raise RuntimeError("configure_environment must run before TensorFlow is imported")
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    if gpu_memory_mb is None:
        os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    if threads is not None:
        if threads < 1:
            raise CicyError(f"--threads {threads}: expected at least 1")
        for env in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
            os.environ[env] = str(threads)


def configure_tensorflow(*, gpu: str | None = None, threads: int | None = None, gpu_memory_mb: int | None = None) -> dict[str, str]:
    """Start TensorFlow with the worker's settings; returns the tags every trial run gets."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpu is not None and not gpus:
        raise CicyError(
            f"--gpu {gpu}: TensorFlow sees no GPU with CUDA_VISIBLE_DEVICES={gpu} "
            "(a CPU-only TensorFlow, no driver, or no such device); drop --gpu for a CPU worker"
        )
    for device in gpus:
        if gpu_memory_mb is not None:
            tf.config.set_logical_device_configuration(device, [tf.config.LogicalDeviceConfiguration(memory_limit=gpu_memory_mb)])
        else:
            tf.config.experimental.set_memory_growth(device, True)
    if threads is not None:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    tags = {
        "worker": worker_id(),
        "gpu": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        "threads": str(tf.config.threading.get_intra_op_parallelism_threads() or "auto"),
    }
    if gpu_memory_mb is not None:
        tags["gpu_memory_mb"] = str(gpu_memory_mb)
    return tags


@dataclass
class WorkerSummary:
    study: object
    ran: int
    finished: int
    budget: int
    tags: dict


def join(
    spec: StudySpec,
    *,
    storage: str | None = None,
    tracking_uri: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    gpu: str | None = None,
    threads: int | None = None,
    gpu_memory_mb: int | None = None,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    system_metrics: bool = False,
    console=None,
) -> WorkerSummary:
    """Join the study ``spec`` names in ``storage`` and run its trials until the study's budget is met.

    Args:
        n_trials: at most this many trials from this worker; the study's budget still caps the total.
        timeout: start no trial after this many seconds.
        tracking_uri: default ``$MLFLOW_TRACKING_URI``, else the URI the study was created with.
        gpu, threads, gpu_memory_mb: see ``configure_environment``.
        heartbeat_interval, grace_period: see ``storage.heartbeat_settings``; all workers of a study
            should use the same.
        system_metrics: sample CPU, memory, disk, network and GPU use into every trial run's ``system/*``
            metrics (``mlflow.enable_system_metrics_logging``; needs psutil, and nvidia-ml-py for GPUs).
    """
    if system_metrics:
        tracking.enable_system_metrics()
    check_budget(n_trials, timeout)
    configure_environment(gpu=gpu, threads=threads, gpu_memory_mb=gpu_memory_mb)
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    try:
        study = studies.load(
            spec.name, storage=storage, heartbeat_interval=heartbeat_interval, grace_period=grace_period, tracking_uri=tracking_uri
        )
    except NoStudy as e:
        raise CicyError(f"{e}; create it first: cicy-search study create FILE --storage URL") from None
    if links.parent_run_id(study) is None:
        raise CicyError(f"study {spec.name!r} in {redact(storage or default_url())} was not made by cicy-search study create")
    studies.check_same_file(spec, study.user_attrs.get("spec"))
    folder = studies.spool_folder(storage, spec.name)
    client = links.resume(study, tracking_uri, log=console.print if console else None, spool_folder=folder)  # its own store, runs repaired
    studies.check_tracking(client)
    budget = int(study.user_attrs.get("budget", spec.n_trials))
    tags = configure_tensorflow(gpu=gpu, threads=threads, gpu_memory_mb=gpu_memory_mb)

    study.pruner = spec.pruner_object()
    work = studies.StudyRun(
        study, spec=spec, budget=budget, client=client, uploader=tracking.uploader(), worker=worker_index(), worker_id=tags["worker"],
        n_trials=n_trials, timeout=timeout if timeout is not None else spec.timeout, console=console,
        spool=spool.Spool(folder, client.tracking_uri),
    )
    ran = studies.drive(work, work.objective(tags))  # TensorFlow is configured now
    return WorkerSummary(study, ran, count_finished(study), budget, tags)
