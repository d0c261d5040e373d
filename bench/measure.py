"""Time one training run per epoch, on the full training split or on a slice of it."""

from __future__ import annotations

import dataclasses
import statistics
import time

import keras

from cicy_search import config as cfg
from cicy_search.training import Prepared, fit


def loops(gpu: bool) -> dict[str, dict]:
    """The training loops compared, as ``train`` settings.

    ``plain fit`` is ``model.fit`` with Keras's defaults: one step per call and, on a CPU, no XLA (Keras's
    ``jit_compile="auto"`` means XLA only where there is a GPU). ``fit, 32 steps/call`` is the loop this
    project had before the fast one.
    """
    return {
        "project": {},
        "fit, 32 steps/call": {"loop": "keras", "jit_compile": gpu},
        "plain fit": {"loop": "keras", "steps_per_execution": 1, "jit_compile": gpu},
    }


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def with_train(config: dict, **train) -> dict:
    return cfg.resolve({**config, "train": {**config["train"], **train}})


def sliced(prepared: Prepared, fraction: float) -> Prepared:
    """The first ``fraction`` of the training and validation splits: the same per-sample work, less of it."""
    if fraction >= 1:
        return prepared
    cut = {k: max(1, round(len(v) * fraction)) if k != "test" else len(v) for k, v in prepared.x.items()}
    return dataclasses.replace(
        prepared,
        x={k: v[: cut[k]] for k, v in prepared.x.items()},
        y={k: {t: a[: cut[k]] for t, a in v.items()} for k, v in prepared.y.items()},
        index={k: v[: cut[k]] for k, v in prepared.index.items()},
    )


def time_epochs(config: dict, prepared: Prepared, *, epochs: int, steps: int | None = None) -> dict:
    """Train ``config`` for ``epochs`` and time each epoch (training plus the validation pass).

    With ``steps``, an epoch covers only that many training batches (and the same fraction of the
    validation split) and the times are scaled up to the full split: honest for a network whose cost is
    its arithmetic, which grows with the samples.
    """
    n_train = len(prepared.x["train"])
    batch = config["train"]["batch_size"]
    fraction = 1.0 if steps is None else min(1.0, steps * batch / n_train)
    part = sliced(prepared, fraction)
    timer = EpochTimer()
    result = fit(with_train(config, epochs=epochs), part, callbacks=[timer])
    scale = n_train / len(part.x["train"])
    measured = statistics.median(timer.seconds[1:] or timer.seconds)
    epoch_s = measured * scale
    return {
        "first_epoch_s": timer.seconds[0] + (scale - 1) * measured,  # includes tracing and compiling
        "epoch_s": epoch_s,
        "samples_per_s": n_train / epoch_s,
        "measured_samples": len(part.x["train"]),
        "extrapolated": fraction < 1,
        "val_accuracy": result.metrics["val_accuracy"],
        "xla": result.extra.get("xla"),
        "model": result.model,
    }


def time_svm(config: dict, prepared: Prepared) -> dict:
    start = time.perf_counter()
    result = fit(config, prepared)
    seconds = time.perf_counter() - start
    n = len(prepared.x["train"])
    return {"first_epoch_s": None, "total_s": seconds, "epoch_s": result.seconds, "samples_per_s": n / result.seconds,
            "measured_samples": n, "extrapolated": False, "val_accuracy": result.metrics["val_accuracy"], "model": result.model}


def gpu_present() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))
