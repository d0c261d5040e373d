"""Model builders: each is a function from the resolved run config to an untrained model.

Builders know nothing of searching: a study, keras-tuner and a YAML run file all hand them the same
mapping (see ``config.py``). Classification heads get their class range from the data (``Target``),
never from a typed-in number of classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from .errors import CicyError


@dataclass(frozen=True)
class Target:
    """One predicted Hodge number and its value range in the data set (class k <-> value low + k)."""

    name: str
    low: int
    high: int

    @property
    def n_classes(self) -> int:
        return self.high - self.low + 1

    @classmethod
    def from_values(cls, name: str, values: np.ndarray) -> "Target":
        return cls(name, int(values.min()), int(values.max()))

    def to_dict(self) -> dict:
        return {"name": self.name, "low": self.low, "high": self.high}


def _layers_values(value, count: int) -> list[int]:
    return list(value) if isinstance(value, list) else [value] * count


def _regularizer(m: dict):
    return keras.regularizers.L1L2(l1=m["l1"], l2=m["l2"]) if (m["l1"] or m["l2"]) else None


def _heads(x, m: dict, targets: list[Target]):
    outputs = {}
    for t in targets:
        if m["head"] == "classification":
            outputs[t.name] = keras.layers.Dense(t.n_classes, activation="softmax", name=t.name)(x)
        else:
            outputs[t.name] = keras.layers.Dense(1, activation="relu", name=t.name)(x)
    return outputs[targets[0].name] if len(targets) == 1 else outputs


def _block_end(x, m: dict):
    if m["batch_norm"]:
        x = keras.layers.BatchNormalization()(x)
    return x


def build_dense(m: dict, shape: tuple[int, int], targets: list[Target]):
    """Flatten -> depth x Dense(width) [-> BatchNorm] [-> Dropout] -> head(s)."""
    inputs = keras.Input(shape=shape, name="matrix")
    x = keras.layers.Flatten()(inputs)
    for width in _layers_values(m["width"], m["depth"]):
        x = keras.layers.Dense(width, activation=m["activation"], kernel_regularizer=_regularizer(m))(x)
        x = _block_end(x, m)
        if m["dropout"]:
            x = keras.layers.Dropout(m["dropout"])(x)
    return keras.Model(inputs, _heads(x, m, targets), name="dense")


def build_cnn(m: dict, shape: tuple[int, int], targets: list[Target]):
    """depth x [Conv2D [-> BatchNorm] [-> pooling]] -> Flatten -> dense_depth x Dense -> head(s)."""
    inputs = keras.Input(shape=shape, name="matrix")
    x = keras.layers.Reshape((*shape, 1))(inputs)
    pool = {"max": keras.layers.MaxPooling2D, "avg": keras.layers.AveragePooling2D}.get(m["pool"])
    for filters in _layers_values(m["filters"], m["depth"]):
        x = keras.layers.Conv2D(
            filters,
            tuple(m["kernel_size"]),
            strides=tuple(m["strides"]),
            padding=m["padding"],
            activation=m["activation"],
            kernel_regularizer=_regularizer(m),
        )(x)
        x = _block_end(x, m)
        if pool is not None:
            x = pool(tuple(m["pool_size"]), padding="same")(x)
    x = keras.layers.Flatten()(x)
    for _ in range(m["dense_depth"]):
        x = keras.layers.Dense(m["dense_width"], activation=m["activation"], kernel_regularizer=_regularizer(m))(x)
    if m["dropout"]:
        x = keras.layers.Dropout(m["dropout"])(x)
    return keras.Model(inputs, _heads(x, m, targets), name="cnn")


def module_kernels(m: dict) -> list[list[list[int]]]:
    """The kernel shapes of each inception module (one set repeated, or one set per module)."""
    k = m["kernels"]
    return k if isinstance(k[0][0], list) else [k] * m["modules"]


def build_inception(m: dict, shape: tuple[int, int], targets: list[Target]):
    """Erbin & Finotello (arXiv 2007.13379): modules of parallel convolutions over rows and columns.

    Each module: Conv2D(filters, k, 'same') for every kernel shape k, concatenated, batch-normalised;
    then dropout, flatten and the head. Default: filters 32, 64, 32 with (12,1) and (1,15) kernels.
    """
    inputs = keras.Input(shape=shape, name="matrix")
    x = keras.layers.Reshape((*shape, 1))(inputs)
    for filters, kernels in zip(_layers_values(m["filters"], m["modules"]), module_kernels(m)):
        branches = [
            keras.layers.Conv2D(
                filters, tuple(k), padding="same", activation=m["activation"], kernel_regularizer=_regularizer(m)
            )(x)
            for k in kernels
        ]
        x = keras.layers.Concatenate()(branches) if len(branches) > 1 else branches[0]
        x = _block_end(x, m)
    if m["dropout"]:
        x = keras.layers.Dropout(m["dropout"])(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, _heads(x, m, targets), name="inception")


class SvmModel:
    """The kernel-method baseline (He et al.): one scikit-learn SVR/SVC per target on the flattened matrix."""

    def __init__(self, m: dict, targets: list[Target]):
        from sklearn.svm import SVC, SVR

        self.targets = targets
        self.head = m["head"]
        if m["head"] == "regression":
            make = lambda: SVR(kernel=m["kernel"], C=m["C"], gamma=m["gamma"], epsilon=m["epsilon"])  # noqa: E731
        else:
            make = lambda: SVC(kernel=m["kernel"], C=m["C"], gamma=m["gamma"])  # noqa: E731
        self.estimators = {t.name: make() for t in targets}

    def fit(self, x: np.ndarray, y: dict[str, np.ndarray]) -> "SvmModel":
        flat = x.reshape(len(x), -1)
        for name, est in self.estimators.items():
            est.fit(flat, y[name])
        return self

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        flat = x.reshape(len(x), -1)
        return {name: est.predict(flat) for name, est in self.estimators.items()}

    def count_params(self) -> int:
        """Stored numbers: support vectors times features plus their coefficients."""
        return int(sum(e.support_vectors_.size + e.dual_coef_.size for e in self.estimators.values()))


BUILDERS = {"dense": build_dense, "cnn": build_cnn, "inception": build_inception}


def build(config: dict, shape: tuple[int, int], targets: list[Target]):
    """The untrained model for a resolved config: a Keras model, or an ``SvmModel``."""
    m = config["model"]
    if m["family"] == "svm":
        return SvmModel(m, targets)
    if m["family"] not in BUILDERS:
        raise CicyError(f"unknown model family {m['family']!r}")
    try:
        return BUILDERS[m["family"]](m, shape, targets)
    except ValueError as e:  # e.g. pooling that shrinks a 12x15 matrix to nothing
        raise CicyError(f"model {m['family']} cannot be built from this config: {str(e).splitlines()[0]}") from None
