"""Train and evaluate one model from a resolved run config.

``prepare`` turns the data section into arrays and a split; ``fit`` trains (Keras or SVM) and
``evaluate`` scores every split with the literature's measure: exact match of the rounded prediction.
The test split is evaluated for the record only; nothing here selects on it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import keras
import numpy as np
from keras import ops

from . import data as cicy_data
from .errors import CicyError
from .models import SvmModel, Target, build

SPLITS = ("train", "val", "test")


@dataclass
class Prepared:
    """Arrays for one config: inputs and integer targets per split, plus the target ranges."""

    dataset: cicy_data.CicyData
    targets: list[Target]
    x: dict[str, np.ndarray]
    y: dict[str, dict[str, np.ndarray]]
    index: dict[str, np.ndarray]

    @property
    def shape(self) -> tuple[int, int]:
        return self.dataset.shape


def prepare(config: dict) -> Prepared:
    d = config["data"]
    full = cicy_data.load(d["dataset"], keep_products=d["keep_products"])
    # Class ranges come from the whole list: they describe the data set, not the sample drawn.
    targets = [Target.from_values(t, full.y(t)) for t in d["targets"]]
    dataset = full
    if d["limit"] is not None and d["limit"] < len(full.frame):
        pick = np.sort(np.random.default_rng(d["seed"]).permutation(len(full.frame))[: d["limit"]])
        dataset = full.subset(pick)
    labels = dataset.y(d["targets"][0]) if d["stratify"] else None
    s = cicy_data.split(
        len(dataset.frame), train=d["train"], val=d["val"], test=d["test"], seed=d["seed"], stratify=labels
    )
    index = {"train": s.train, "val": s.val, "test": s.test}
    x = {k: dataset.x[i] for k, i in index.items()}
    y = {k: {t.name: dataset.y(t.name)[i] for t in targets} for k, i in index.items()}
    return Prepared(dataset, targets, x, y, index)


def encode(y: dict[str, np.ndarray], targets: list[Target], head: str):
    """Integer targets -> what the Keras head is trained on (class indices or float values)."""
    out = {
        t.name: (y[t.name] - t.low).astype(np.int32) if head == "classification" else y[t.name].astype(np.float32)
        for t in targets
    }
    return out[targets[0].name] if len(targets) == 1 else out


def decode(outputs, targets: list[Target], head: str) -> dict[str, np.ndarray]:
    """Model outputs -> integer Hodge numbers (argmax + offset, or the rounded regression value)."""
    if not isinstance(outputs, dict):
        outputs = {targets[0].name: outputs}
    result = {}
    for t in targets:
        out = np.asarray(outputs[t.name])
        if head == "classification" and out.ndim == 2 and out.shape[1] > 1:
            result[t.name] = out.argmax(axis=1).astype(np.int64) + t.low
        else:
            result[t.name] = np.rint(out.reshape(len(out))).astype(np.int64)
    return result


def scores(pred: dict[str, np.ndarray], true: dict[str, np.ndarray], prefix: str) -> dict[str, float]:
    """Accuracy (exact match), MAE and MSE per target, and the mean accuracy over targets."""
    out: dict[str, float] = {}
    for name, p in pred.items():
        err = p.astype(np.float64) - true[name]
        out[f"{prefix}_{name}_accuracy"] = float(np.mean(err == 0)) if len(err) else math.nan
        out[f"{prefix}_{name}_mae"] = float(np.mean(np.abs(err))) if len(err) else math.nan
        out[f"{prefix}_{name}_mse"] = float(np.mean(err**2)) if len(err) else math.nan
    out[f"{prefix}_accuracy"] = float(np.mean([out[f"{prefix}_{n}_accuracy"] for n in pred]))
    return out


def _accuracy_metric(head: str):
    if head == "classification":
        return keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    return keras.metrics.MeanMetricWrapper(rounded_accuracy, name="accuracy")


@keras.saving.register_keras_serializable(package="cicy_search")
def rounded_accuracy(y_true, y_pred):
    """Exact match of the rounded regression output: the literature's accuracy for Hodge numbers."""
    y_pred = ops.reshape(y_pred, ops.shape(y_true))
    return ops.cast(ops.equal(ops.round(y_pred), ops.cast(y_true, y_pred.dtype)), "float32")


def compile_model(model, config: dict, targets: list[Target], steps_per_epoch: int) -> None:
    t, m = config["train"], config["model"]
    optimizer = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }[t["optimizer"]]
    lr: Any = t["learning_rate"]
    if t["lr_schedule"] == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, t["epochs"] * steps_per_epoch))
    loss = "sparse_categorical_crossentropy" if m["head"] == "classification" else "mse"
    names = [x.name for x in targets]
    model.compile(
        optimizer=optimizer(learning_rate=lr),
        loss=loss if len(names) == 1 else {n: loss for n in names},
        metrics=[_accuracy_metric(m["head"])] if len(names) == 1 else {n: [_accuracy_metric(m["head"])] for n in names},
        # Several steps per call into the compiled graph: the per-step Python overhead dominates small models.
        steps_per_execution=t["steps_per_execution"] or max(1, min(32, steps_per_epoch)),
    )


@dataclass
class TrainResult:
    config: dict
    model: Any
    targets: list[Target]
    history: dict[str, list[float]]
    metrics: dict[str, float]
    n_params: int
    seconds: float
    epochs_run: int
    extra: dict = field(default_factory=dict)


def _callbacks(config: dict, steps_per_epoch: int) -> list:
    t = config["train"]
    cbs: list = [keras.callbacks.TerminateOnNaN()]
    if t["early_stopping"]:
        cbs.append(keras.callbacks.EarlyStopping("val_loss", patience=t["early_stopping"], restore_best_weights=True))
    if t["lr_schedule"] == "reduce_on_plateau":
        cbs.append(keras.callbacks.ReduceLROnPlateau("val_loss", factor=t["lr_factor"], patience=t["lr_patience"]))
    return cbs


class EpochCallback(keras.callbacks.Callback):
    """Calls ``fn(epoch, logs)`` after every epoch: how tracking and pruning see training."""

    def __init__(self, fn: Callable[[int, dict], None]):
        super().__init__()
        self.fn = fn

    def on_epoch_end(self, epoch, logs=None):
        self.fn(epoch, dict(logs or {}))


class TrainingDiverged(CicyError):
    """The loss became NaN or infinite."""


def fit(
    config: dict,
    prepared: Prepared | None = None,
    *,
    callbacks: Sequence = (),
    progress: bool = False,
) -> TrainResult:
    """Train the model a resolved config describes and score it on every split.

    Args:
        config: a resolved run config (``config.resolve``).
        prepared: arrays from ``prepare(config)``; prepared here when omitted.
        callbacks: extra Keras callbacks (metric logging, pruning); ignored by the SVM.
        progress: show a progress bar over epochs.
    """
    prepared = prepared or prepare(config)
    keras.utils.set_random_seed(config["seed"])
    head = config["model"]["head"]
    model = build(config, prepared.shape, prepared.targets)
    start = time.perf_counter()
    history: dict[str, list[float]] = {}
    if isinstance(model, SvmModel):
        model.fit(prepared.x["train"], prepared.y["train"])
        epochs_run = 0
    else:
        batch = config["train"]["batch_size"]
        steps = max(1, math.ceil(len(prepared.x["train"]) / batch))
        compile_model(model, config, prepared.targets, steps)
        cbs = [*_callbacks(config, steps), *callbacks]
        if progress:
            cbs.append(ProgressBar(config["train"]["epochs"]))
        h = model.fit(
            prepared.x["train"],
            encode(prepared.y["train"], prepared.targets, head),
            validation_data=(prepared.x["val"], encode(prepared.y["val"], prepared.targets, head)),
            epochs=config["train"]["epochs"],
            batch_size=batch,
            shuffle=True,
            callbacks=cbs,
            verbose=0,
        )
        history = {k: [float(v) for v in vs] for k, vs in h.history.items()}
        epochs_run = len(history.get("loss", []))
        losses = history.get("loss", [])
        if losses and not all(math.isfinite(v) for v in losses):
            bad = next(i for i, v in enumerate(losses) if not math.isfinite(v))
            raise TrainingDiverged(f"training loss became {losses[bad]} at epoch {bad}")
    seconds = time.perf_counter() - start
    metrics = evaluate(model, prepared, head)
    return TrainResult(config, model, prepared.targets, history, metrics, model.count_params(), seconds, epochs_run)


def predict(model, x: np.ndarray, targets: list[Target], head: str) -> dict[str, np.ndarray]:
    """Integer Hodge numbers for padded matrices ``x`` (N, rows, cols)."""
    outputs = model.predict(x) if isinstance(model, SvmModel) else model.predict(x, batch_size=1024, verbose=0)
    return decode(outputs, targets, head)


def evaluate(model, prepared: Prepared, head: str) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for split in SPLITS:
        if len(prepared.x[split]):
            metrics.update(scores(predict(model, prepared.x[split], prepared.targets, head), prepared.y[split], split))
    return metrics


class ProgressBar(keras.callbacks.Callback):
    """A rich progress bar over epochs showing the latest loss and validation accuracy."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def on_train_begin(self, logs=None):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("epoch"), MofNCompleteColumn(), BarColumn(), TimeRemainingColumn(), TextColumn("{task.fields[status]}")
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=self.epochs, status="")

    def on_epoch_end(self, epoch, logs=None):
        shown = ("loss", "val_loss", "val_accuracy")
        status = " ".join(f"{k}={v:.4g}" for k, v in (logs or {}).items() if k in shown)
        self.progress.update(self.task, advance=1, status=status)

    def on_train_end(self, logs=None):
        self.progress.stop()
