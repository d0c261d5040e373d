"""One tracked training run: train a resolved config and record everything about it in MLflow.

Used by ``cicy-search train`` and by every study trial. The run is created only after the config
has been validated, and it always ends with a status: FINISHED, KILLED (pruned) or FAILED with
the reason in the ``failure_reason`` tag. Study trials hand their writes to a background uploader,
so creating the run, its metric batches, artifacts and end cost the training thread nothing.
"""

from __future__ import annotations

import json
import math
import tempfile
from concurrent.futures import Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import keras

from .. import bundle, tracking
from ..compat import source_layer
from ..config import dump_yaml, flatten
from ..training import EpochCallback, Prepared, TrainResult, fit, prepare, test_misses


#: The artifact listing the test matrices a finished run's model gets wrong (``training.test_misses``).
MISSES = "test_misses.json"


@dataclass
class TrackedResult:
    result: TrainResult
    run_id: str


def model_summary(model) -> str:
    """A Keras model's layers as plain text: name (type), output shape, params, the layers it reads; the totals.

    What ``model.summary()`` shows, without its rich table, which costs many times more (docs/performance.md).
    """
    if not hasattr(model, "layers"):
        return repr(model)
    rows = [("Layer (type)", "Output shape", "Params", "Inputs")]
    for layer in model.layers:
        rows.append((f"{layer.name} ({type(layer).__name__})", _output_shape(layer), f"{layer.count_params():,}", _inputs(layer)))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f'Model: "{model.name}"']
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + (f"  {row[3]}" if row[3] else "") for row in rows]
    total, trainable = model.count_params(), sum(math.prod(w.shape) for w in model.trainable_weights)
    lines.append(f"Total params: {total:,} (trainable {trainable:,}, non-trainable {total - trainable:,})")
    return "\n".join(lines) + "\n"


def _output_shape(layer) -> str:
    try:
        out = layer.output
    except (AttributeError, ValueError):  # a layer not called on symbolic inputs
        return "?"
    return ", ".join(str(tuple(t.shape)) for t in (out if isinstance(out, (list, tuple)) else [out]))


def _inputs(layer) -> str:
    if isinstance(layer, keras.layers.InputLayer):
        return ""
    try:
        tensors = layer.input
    except (AttributeError, ValueError):
        return ""
    names = [source_layer(t) for t in keras.tree.flatten(tensors)]
    return ", ".join(dict.fromkeys(n for n in names if n))


def run_tracked(
    config: dict,
    *,
    mlflow_client,
    experiment: str,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    tags: dict | None = None,
    params: dict | None = None,
    prepared: Prepared | None = None,
    callbacks: Sequence = (),
    log_model: bool | Callable[[TrainResult], bool] = True,
    log_test: bool = True,
    progress: bool = False,
    on_start: Callable[[str], None] | None = None,
    uploader: tracking.Uploader | None = None,
    parent_inputs: bool = False,
    initial_weights: str | None = None,
    initial_epoch: int = 0,
    spool=None,
    trial: int | None = None,
) -> TrackedResult:
    """Train ``config`` inside one MLflow run.

    Args:
        config: a resolved run config; all its values become params (``model.depth``, ...).
        mlflow_client: from ``tracking.client``.
        experiment: MLflow experiment name (created if missing).
        parent_run_id: nest this run under another (a study's run).
        tags, params: extra tags and params (trial number, sampler, sampled values).
        callbacks: extra Keras callbacks (pruning).
        log_model: log the trained model, or a predicate deciding it from the result (best trial so far).
        log_test: log the test split's scores (``test_*``); study trials do not, so nothing can select on them.
        on_start: called with the run id once the run exists (a trial links to it); its params are written with
            its first metric batch (``tracking.FLUSH_SECONDS`` into training) or its end, one request fewer.
        uploader: make every MLflow write in its background thread (study trials): the run is created,
            filled and closed there while training goes on; this returns once ``on_start`` has run, and
            the artifacts and the run's end are written after that (``Uploader.flush`` waits for them).
            Without one, everything is written before this returns.
        parent_inputs: also list the run's data set among the parent run's inputs (a recipe's runs).
        initial_weights, initial_epoch: continue a saved model from that epoch (``training.fit``; keras-tuner's
            Hyperband); its ``epoch_*`` metrics are logged at their epochs, from ``initial_epoch`` on.
        spool, trial: a study trial's run: its writes wait in the spool while the tracking server is away
            (``tracking.spool``; ``on_start`` then gets None).
    """
    prepared = prepared or prepare(config)
    d = config["data"]
    note = tracking.config_note(config)  # the config as the run's description, with its creation
    run = tracking.Run.start(
        mlflow_client,
        experiment,
        run_name=run_name or config["name"],
        tags={**tracking.context_tags(d["dataset"], prepared.dataset.hash), **note, **(tags or {})},
        parent_run_id=parent_run_id,
        uploader=uploader,
        spool=spool,
        trial=trial,
    )
    monitor = linked = None
    with run:  # ends it FINISHED, or KILLED (pruned) / FAILED with the error's first line
        try:
            sizes = {f"data.n_{split}": len(prepared.x[split]) for split in ("train", "val", "test")}
            run.log_params({**flatten(config), **sizes, **(params or {})}, with_metrics=True)
            inputs = tracking.dataset_inputs(d, prepared.dataset.hash, prepared.index)
            run.log_inputs(inputs)
            if parent_inputs and parent_run_id:
                tracking.Run(mlflow_client, parent_run_id, uploader=uploader).log_inputs(inputs)
            linked = run.later(lambda: on_start(run.run_id), "link") if on_start else None
            if not note:  # too long for a description
                run.log_artifacts(lambda: {"config.yaml": dump_yaml(config)})  # while it trains, not after
            if tracking.system_metrics_enabled():
                monitor = tracking.SystemMetrics(run)
            epoch_logger = EpochCallback(
                lambda epoch, logs: run.log_metrics(
                    {f"epoch_{k}": v for k, v in logs.items() if log_test or not k.startswith("test_")},
                    step=epoch, flush_after=tracking.FLUSH_SECONDS,
                )
            )
            result = fit(
                config, prepared, callbacks=[epoch_logger, *callbacks], progress=progress, initial_weights=initial_weights,
                initial_epoch=initial_epoch,
            )
            if isinstance(linked, Future):
                linked.result()  # the run could not be made or linked: the trial must not look tracked
            if monitor is not None:
                monitor.stop()
                monitor = None
            scores = result.metrics if log_test else {k: v for k, v in result.metrics.items() if not k.startswith("test_")}
            final = {**scores, "n_params": result.n_params, "train_seconds": result.seconds, "epochs_run": result.epochs_run}
            run.log_metrics(final, step=result.epochs_run, flush_after=float("inf"))
            if log_test:  # which test matrices it misses, beside how many
                misses = json.dumps(test_misses(result.model, prepared, config["model"]["head"]), indent=1)
                run.log_artifacts({MISSES: misses})
            run.later(lambda: _log_model(run, result, log_model), "model")
            run.end_tags["state"] = "complete"
        except BaseException as exc:
            if monitor is not None:
                monitor.stop()
            if isinstance(linked, Future):  # a pruned or failed trial is still running while its link is written
                interrupt = isinstance(exc, KeyboardInterrupt)
                wait([linked], timeout=tracking.wait_seconds(tracking.INTERRUPTED_FLUSH_SECONDS) if interrupt else None)
            raise
    return TrackedResult(result, run.run_id)


def _log_model(run: tracking.Run, result: TrainResult, log_model: bool | Callable[[TrainResult], bool]) -> None:
    """After training, when ``log_model`` says so: the model folder and its summary (``model_summary.txt``), in one
    upload; with an uploader this runs in its thread. A run without its model keeps its config (its description) and
    ``n_params``.

    No learning-curve figure: MLflow charts the ``epoch_*`` metrics itself, and ``report compare`` draws
    them side by side offline.
    """
    if not (log_model(result) if callable(log_model) else log_model):
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "model_summary.txt").write_text(model_summary(result.model))
        bundle.save(folder / "model", result.model, result.config, result.targets)
        run.upload(folder)
    run.end_tags["model_logged"] = "true"
