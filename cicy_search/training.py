"""Train and evaluate one model from a resolved run config.

``prepare`` turns the data section into arrays and a split; ``fit`` trains (Keras, by default with
``fast_fit``'s compiled whole-epoch loop, or SVM) and ``evaluate`` scores every split with the
literature's measure: exact match of the rounded prediction.
The test split is evaluated for the record only; nothing here selects on it.
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import keras
import numpy as np
from keras import ops

from . import compat, signals
from . import data as cicy_data
from .errors import CicyError
from .models import Ensemble, SvmModel, Target, build

SPLITS = ("train", "val", "test")


@dataclass
class Prepared:
    """Arrays for one config: model inputs and integer targets per split, plus the target ranges.

    ``x`` is what the network reads (``data.model_inputs``: canonical order, invariant channels),
    ``matrices`` the padded configuration matrices themselves. ``targets`` are what the network learns;
    ``report`` the Hodge numbers scored, which with ``data.physics`` include ones derived exactly.
    """

    dataset: cicy_data.CicyData
    targets: list[Target]
    x: dict[str, np.ndarray]
    y: dict[str, dict[str, np.ndarray]]
    index: dict[str, np.ndarray]
    matrices: dict[str, np.ndarray] = field(default_factory=dict)
    data: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one model input: (rows, cols), or (rows, cols, channels) with feature channels."""
        return tuple(self.x["train"].shape[1:])

    @property
    def report(self) -> list[str]:
        return list(self.data.get("targets") or [t.name for t in self.targets])


def network_targets(d: dict) -> list[str]:
    """What the network learns: the requested targets, or with ``physics`` the independent ones (h11; on 4-folds h11, h21)."""
    if d.get("physics"):
        return ["h11", "h21"] if cicy_data.is_imported(d["dataset"]) else ["h11"]
    return list(d["targets"])


def inputs_for(matrices: np.ndarray, d: dict) -> np.ndarray:
    return cicy_data.model_inputs(matrices, canonical_form=d.get("canonical", False), features=d.get("features", ()))


def prepare(config: dict) -> Prepared:
    d = config["data"]
    full = cicy_data.load(d["dataset"], keep_products=d["keep_products"])
    # Class ranges come from the whole list: they describe the data set, not the sample drawn.
    targets = [Target.from_values(t, full.y(t)) for t in network_targets(d)]
    dataset, s = cicy_data.select(d)  # a split left empty is an error here, before any run exists
    index = {"train": s.train, "val": s.val, "test": s.test}
    inputs = inputs_for(dataset.x, d)
    x = {k: inputs[i] for k, i in index.items()}
    # Inputs that are the matrices themselves (no canonical order, no channels) are not copied twice.
    matrices = x if inputs is dataset.x else {k: dataset.x[i] for k, i in index.items()}
    names = dict.fromkeys([*network_targets(d), *d["targets"]])
    y = {k: {name: dataset.y(name)[i] for name in names} for k, i in index.items()}
    return Prepared(dataset, targets, x, y, index, matrices, dict(d))


def check_model(config: dict) -> None:
    """Build a plugin family's model once on the data set's real shape and target ranges, and call it on a tiny
    batch: every mistake (an import, the schema, the builder raising, the wrong outputs) is a ``CicyError`` now,
    before a tracking store or a study is opened. The built-in families are tested here and skip it."""
    from .models import family

    m, d = config["model"], config["data"]
    if m["family"] == "svm" or family(m["family"]).builtin:
        return
    full = cicy_data.load(d["dataset"], keep_products=d["keep_products"])
    targets = [Target.from_values(t, full.y(t)) for t in network_targets(d)]
    build(config, inputs_for(full.x[:2], d).shape[1:], targets)
    keras.backend.clear_session()


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


# On a CPU, XLA compiles the dense network's epoch for longer than TensorFlow's graph optimiser, then saves a
# little on every step: it pays only from a few thousand steps on (the default run, 20 epochs of 197 steps, is
# about even). The measurements behind this bound: docs/performance.md, bench.throughput.
XLA_MIN_STEPS = 3000


def use_xla(config: dict, model, steps_per_epoch: int) -> bool:
    """Whether training compiles with XLA: ``train.jit_compile``, where ``"auto"`` means where it helps.

    On a GPU it always helps. On a CPU it fuses a dense network's many small ops (faster epochs) once the run
    is long enough to repay its compile time, but its convolutions are far slower than TensorFlow's oneDNN
    kernels, so never with those (docs/performance.md gives the measured ratios).
    """
    choice = config["train"]["jit_compile"]
    if choice != "auto":
        return bool(choice)
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return True
    if has_convolutions(model):
        return False
    return config["train"]["epochs"] * steps_per_epoch >= XLA_MIN_STEPS


def has_convolutions(model) -> bool:
    return any(isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)) for layer in model.layers)


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
        # (The fast loop runs a whole epoch per call and compiles its own functions; this is for model.fit.)
        steps_per_execution=t["steps_per_execution"] or max(1, min(32, steps_per_epoch)),
        # XLA for model.fit's steps (loop: keras). The fast loop compiles its own; predict() after it stays
        # without XLA, which would recompile for every new batch shape.
        jit_compile=use_xla(config, model, steps_per_epoch) if t["loop"] == "keras" else False,
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


class SignalCheck(keras.callbacks.Callback):
    """At each epoch's end, raises a Ctrl-C or SIGTERM that a library swallowed (``signals.check``); last in the
    list, so that it also sees one swallowed by the callbacks before it in the same epoch."""

    def on_epoch_end(self, epoch, logs=None):
        signals.check()


class TrainingDiverged(CicyError):
    """The loss, or a weight, became NaN or infinite."""


def fit(
    config: dict,
    prepared: Prepared | None = None,
    *,
    callbacks: Sequence = (),
    progress: bool = False,
    initial_weights: str | None = None,
    initial_epoch: int = 0,
) -> TrainResult:
    """Train the model a resolved config describes and score it on every split (``train.ensemble`` > 1: that many
    models, averaged and scored once; ``_fit_ensemble``).

    Args:
        config: a resolved run config (``config.resolve``).
        prepared: arrays from ``prepare(config)``; prepared here when omitted.
        callbacks: extra Keras callbacks (metric logging, pruning); ignored by the SVM.
        progress: show a progress bar over epochs.
        initial_weights, initial_epoch: continue a model trained for ``initial_epoch`` epochs whose weights
            were saved (``model.save_weights``, optimizer included) to this file: epochs ``initial_epoch`` to
            ``train.epochs`` - 1 are trained (keras-tuner's Hyperband); ``epochs_run`` counts those only.
    """
    signals.check()  # a signal swallowed after the last training ended (in evaluation, say) ends the next one here
    prepared = prepared or prepare(config)
    t, head = config["train"], config["model"]["head"]
    if t["ensemble"] > 1:
        if initial_weights:
            raise CicyError("train.ensemble: a saved model is continued alone; set train.ensemble to 1 to continue one")
        return _fit_ensemble(config, prepared, callbacks, progress)
    result = _train(config, prepared, callbacks, progress, initial_weights, initial_epoch)
    result.metrics = evaluate(result.model, prepared, head)
    return result


def _train(
    config: dict, prepared: Prepared, callbacks: Sequence, progress: bool, initial_weights: str | None = None, initial_epoch: int = 0
) -> TrainResult:
    """``fit`` without the scores (``metrics`` empty): one model trained."""
    t = config["train"]
    head = config["model"]["head"]
    if config["model"]["family"] == "dense" and t["loop"] == "fast":
        # Nothing in a dense network or the fast loop reads TensorFlow's global seed (model.fit's shuffling and a
        # plugin's own ops may), and setting it clears TensorFlow's cache of instantiated functions: the shared
        # traced epoch (SharedDenseLoop) would be optimised again for every trial.
        compat.seed_keras(config["seed"])
    else:
        keras.utils.set_random_seed(config["seed"])
    with dtype_policy("mixed_float16" if t["mixed_precision"] else None):
        model = build(config, prepared.shape, prepared.targets)
    start = time.perf_counter()
    history: dict[str, list[float]] = {}
    extra: dict = {}
    if isinstance(model, SvmModel):
        model.fit(prepared.x["train"], prepared.y["train"])
        epochs_run = 0
    else:
        batch = t["batch_size"]
        steps = max(1, math.ceil(len(prepared.x["train"]) / batch))
        compile_model(model, config, prepared.targets, steps)
        if initial_weights:  # the optimizer's state too (its step count drives the learning-rate schedule)
            model.optimizer.build(model.trainable_variables)
            model.load_weights(initial_weights)
        cbs = [*_callbacks(config, steps), *callbacks]
        if progress:
            cbs.append(ProgressBar(t["epochs"]))
        cbs.append(SignalCheck())
        train = (prepared.x["train"], encode(prepared.y["train"], prepared.targets, head))
        val = (prepared.x["val"], encode(prepared.y["val"], prepared.targets, head))
        if t["loop"] != "fast":  # model.fit gets floats; the fast loop casts each batch of compact matrices
            train, val = ((a.astype(np.float32, copy=False), b) for a, b in (train, val))
        if t["loop"] == "fast":
            xla = use_xla(config, model, steps)
            h = fast_fit(
                model, train, val, epochs=t["epochs"], batch_size=batch, callbacks=cbs, seed=config["seed"],
                jit_compile=xla, augment=t["augment"] == "permute", initial_epoch=initial_epoch,
            )
        else:
            xla = bool(model.jit_compile)
            h = model.fit(
                *train, validation_data=val, epochs=t["epochs"], initial_epoch=initial_epoch, batch_size=batch, shuffle=True,
                callbacks=cbs, verbose=0,
            )
        extra["xla"] = xla
        history = {k: [float(v) for v in vs] for k, vs in h.history.items()}
        epochs_run = len(history.get("loss", []))
        losses = history.get("loss", [])
        if losses and not all(math.isfinite(v) for v in losses):
            bad = next(i for i, v in enumerate(losses) if not math.isfinite(v))
            raise TrainingDiverged(f"training diverged: the loss became {losses[bad]} at epoch {bad}")
        if not all(np.isfinite(w).all() for w in model.get_weights()):
            # A loss can stay finite while weights overflow: a ReLU output pushed below zero everywhere hides them.
            raise TrainingDiverged(f"training diverged: weights became infinite or NaN (loss {losses[-1] if losses else 'n/a'} at the last epoch)")
    seconds = time.perf_counter() - start
    return TrainResult(config, model, prepared.targets, history, {}, model.count_params(), seconds, epochs_run, extra)


def _fit_ensemble(config: dict, prepared: Prepared, callbacks: Sequence, progress: bool) -> TrainResult:
    """``train.ensemble`` members of ``config``, trained one after the other with seeds ``seed``, ``seed + 1``, ...
    and scored once, averaged (``models.Ensemble``).

    The callbacks see one run: member k's epochs are numbered from k x ``train.epochs`` on, so a run's ``epoch_*``
    metrics and a trial's reports to its pruner follow one another (the pruner's rungs fall in the first member).
    ``history`` is the members' histories end to end, ``seconds`` and ``epochs_run`` their sums.
    """
    from .config import MAX_SEED

    t = config["train"]
    members = []
    for k in range(t["ensemble"]):
        member = {**config, "seed": (config["seed"] + k) % (MAX_SEED + 1), "train": {**t, "ensemble": 1}}
        shifted = [_Shifted(cb, k * t["epochs"]) for cb in callbacks]
        bar = [ProgressBar(t["epochs"], f"member {k + 1}/{t['ensemble']}, epoch")] if progress else []
        members.append(_train(member, prepared, [*shifted, *bar], progress=False))
    model = Ensemble([m.model for m in members], name="ensemble")
    model(prepared.x["train"][:1].astype(np.float32))  # built, so that it counts its parameters and saves
    history = {key: [v for m in members for v in m.history.get(key, [])] for key in members[0].history}
    return TrainResult(
        config, model, prepared.targets, history, evaluate(model, prepared, config["model"]["head"]), model.count_params(),
        sum(m.seconds for m in members), sum(m.epochs_run for m in members), members[0].extra,
    )


class _Shifted(keras.callbacks.Callback):
    """Forwards a callback's hooks with its epochs numbered from ``offset`` on: an ensemble member's epochs after
    those of the members trained before it."""

    def __init__(self, inner: keras.callbacks.Callback, offset: int):
        super().__init__()
        self.inner, self.offset = inner, offset

    def set_model(self, model):
        super().set_model(model)
        self.inner.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        self.inner.set_params(params)

    def on_train_begin(self, logs=None):
        self.inner.on_train_begin(logs)

    def on_train_end(self, logs=None):
        self.inner.on_train_end(logs)

    def on_epoch_begin(self, epoch, logs=None):
        self.inner.on_epoch_begin(epoch + self.offset, logs)

    def on_epoch_end(self, epoch, logs=None):
        self.inner.on_epoch_end(epoch + self.offset, logs)

    def on_train_batch_begin(self, batch, logs=None):
        self.inner.on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self.inner.on_train_batch_end(batch, logs)


@contextmanager
def dtype_policy(name: str | None):
    """Build models under a Keras dtype policy (``mixed_float16``), restoring the global one after."""
    before = keras.config.dtype_policy()
    if name:
        keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


EVAL_BATCH = 1024  # validation batches: no effect on the scores, fewer steps


def fast_fit(
    model, train, val, *, epochs: int, batch_size: int, callbacks: Sequence = (), seed: int = 0,
    jit_compile: bool = False, augment: bool = False, initial_epoch: int = 0,
):
    """``model.fit(x, y, shuffle=True, validation_data=val)`` for data that fits in memory, one compiled call per epoch.

    The arrays become tensors once. An epoch is one call of a ``tf.function`` that gathers shuffled
    batches from them and runs ``model.train_step`` in a ``tf.while_loop`` (``_each_batch``), so nothing
    runs in Python or tf.data between steps; the validation pass follows in the same call (with XLA, which
    compiles the training steps only, in a second one), so its batch-end callbacks run after it. Steps,
    batch size, loss, metrics, history and callbacks are those of ``model.fit`` with ``steps_per_execution``
    = one epoch. Only the order differs: epoch e uses the e-th ``permutation(n)`` of
    ``np.random.default_rng(seed)``, a new order every epoch (seeded ``model.fit`` in Keras 3.15 / TF 2.21
    repeats its first order in every epoch). With ``augment`` every training batch has the rows and the
    columns of each matrix randomly permuted (stateless random numbers from the seed, epoch and step).
    ``initial_epoch``: start there (as ``model.fit``'s), with the order that epoch has in a full run.
    A dense network (``SharedDenseLoop.signature_of``), without XLA or augmentation, trains in the epoch traced for
    the first model of its signature in this thread: its weights are copied in, and back after every epoch (what
    callbacks read) and at the end (with Adam's slots and step). Other models' functions are traced here anew.
    Returns the ``History``.
    """
    import tensorflow as tf

    x, y = tf.nest.map_structure(tf.convert_to_tensor, train)
    vx, vy = tf.nest.map_structure(tf.convert_to_tensor, val)
    n = int(x.shape[0])
    steps = max(1, math.ceil(n / batch_size))
    signature = None if (jit_compile or augment) else SharedDenseLoop.signature_of(model, x, y)
    if signature is not None:  # a dense network: the epoch traced for an earlier trial of its signature, if any
        shared = shared_loop(signature)
        shared.load(model)
        hyper = [tf.constant(v) for v in shared.hyperparameters(model)]

        def epoch_pass(order, key):
            lr = tf.constant(float(model.optimizer.learning_rate), tf.float32)  # ReduceLROnPlateau may change it
            loss, accuracy, val_loss, val_accuracy = shared.epoch(x, y, vx, vy, order, tf.constant(batch_size), lr, *hyper)
            shared.store(model, weights_only=True)  # what callbacks (early stopping) read
            return {"loss": loss, "accuracy": accuracy}, {"loss": val_loss, "accuracy": val_accuracy}

    else:
        shared = None
        _build_state(model, x[:1], tf.nest.map_structure(lambda a: a[:1], y))
        epoch_pass = _traced_epoch(model, x, y, vx, vy, batch_size, jit_compile, augment)
    rng = np.random.default_rng(seed)
    for _ in range(initial_epoch):
        rng.permutation(n)
    cbs = keras.callbacks.CallbackList(list(callbacks), add_history=True, model=model, epochs=epochs, steps=steps, verbose=0)
    model.stop_training = False
    cbs.on_train_begin()
    logs: dict = {}
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        cbs.on_epoch_begin(epoch)
        cbs.on_train_batch_begin(0)
        train, val = epoch_pass(tf.constant(rng.permutation(n), dtype=tf.int32), tf.constant([seed, epoch], dtype=tf.int32))
        logs = _floats(train)
        cbs.on_train_batch_end(steps - 1, logs)  # one execution per epoch, as model.fit calls it
        logs.update({f"val_{k}": v for k, v in _floats(val).items()})
        cbs.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    if shared is not None:
        shared.store(model)
    else:
        model.optimizer.finalize_variable_values(model.trainable_weights)
    cbs.on_train_end(logs)
    return model.history


def _traced_epoch(model, x, y, vx, vy, batch_size: int, jit_compile: bool, augment: bool):
    """``epoch_pass(order, key) -> (train logs, val logs)``: this model's own traced training and validation pass.

    The functions are traced here, through ``get_concrete_function``, so that a new one per trial (a new model)
    is not counted as retracing by TensorFlow, which warns on stderr about a function traced again and again.
    """
    import tensorflow as tf

    transform = permute_batch if augment else None
    # Batches of unknown size give convolutions other kernels (other numbers) than today's static ones.
    static = jit_compile or has_convolutions(model)
    specs = (tf.TensorSpec([int(x.shape[0])], tf.int32), tf.TensorSpec([2], tf.int32))

    def train_pass(order, key):
        _each_batch(model.train_step, x, y, order, batch_size, transform, key, static=static)
        return model.get_metrics_result()

    def val_pass():
        model.reset_metrics()
        _each_batch(model.test_step, vx, vy, tf.range(vx.shape[0]), EVAL_BATCH, static=static)
        return model.get_metrics_result()

    if jit_compile:  # XLA for the training steps; on one batch or a few of validation it would add compile time only
        train_call = tf.function(train_pass, jit_compile=True).get_concrete_function(*specs)
        val_call = tf.function(val_pass).get_concrete_function()
        return lambda order, key: (train_call(order, key), val_call())
    # One call an epoch, one function to trace and optimise: the validation pass follows in the graph.
    return tf.function(lambda order, key: (train_pass(order, key), val_pass())).get_concrete_function(*specs)


_LOOPS = threading.local()  # each thread its own loops: their variables hold one trial's state at a time


def shared_loop(signature: tuple) -> SharedDenseLoop:
    """This thread's ``SharedDenseLoop`` for a signature, made (and traced) on first use."""
    loops = _LOOPS.__dict__.setdefault("loops", {})
    if signature not in loops:
        loops[signature] = SharedDenseLoop(signature)
    return loops[signature]


class SharedDenseLoop:
    """One traced epoch for every dense network of a depth: trials of any width, dropout, L1/L2 and learning rate share it.

    A new Keras model per trial means a new ``tf.function`` per trial, whose tracing and graph optimisation cost
    more than a small network's epochs. This loop holds its weights, Adam's slots and the dropout seeds in
    variables of unknown shape, and takes the data, the batch order and size, the learning rate and each layer's
    L1, L2 and dropout rate as tensors: it is traced once per signature (``signature``: the depth, activations,
    which layers have dropout or a regulariser, the head, the input's shape and types) and reused for every
    trial with it. It computes what ``model.train_step`` and ``model.test_step`` compute for such a model
    (``Flatten -> (Dense [-> Dropout])* -> Dense`` head, Adam, sparse categorical cross-entropy of a softmax or
    the MSE of one output, the loss and accuracy metrics ``compile_model`` sets), with the model's own dropout
    seed sequence. Every trial's numbers are those of the same trial trained alone: the graph is the same
    whatever ran before, and ``load`` overwrites all of its state.
    """

    def __init__(self, signature: tuple):
        import tensorflow as tf

        self.signature = signature
        (self.activations, self.dropout, self.l1, self.l2, self.head, self.outputs, x_spec, y_dtype) = signature
        layers = len(self.activations) + 1

        # Kernels and biases of any width; what is fixed (the flattened input, the head's outputs) is in the shapes.
        x_dtype, x_shape = x_spec
        sizes = [int(np.prod(x_shape)), *[None] * len(self.activations), self.outputs]
        shapes = [shape for k in range(layers) for shape in ([sizes[k], sizes[k + 1]], [sizes[k + 1]])]

        def variables():
            return [tf.Variable(tf.zeros([d or 0 for d in shape]), shape=tf.TensorShape(shape)) for shape in shapes]

        self.weights = variables()  # kernel, bias per layer
        self.momenta = variables()
        self.velocities = variables()
        self.iterations = tf.Variable(0, dtype=tf.int64)
        self.seeds = [tf.Variable([0, 0], dtype=tf.int64) for _ in range(sum(self.dropout))]
        data = [tf.TensorSpec([None, *x_shape], x_dtype), tf.TensorSpec([None], y_dtype)] * 2
        scalars = [tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.float32)]
        per_layer = [tf.TensorSpec([len(self.activations)], tf.float32)] * 4
        # No AutoGraph: the loops are tf.while_loop already and every Python branch is on a signature's constant.
        self.epoch = tf.function(
            self._epoch, input_signature=[*data, tf.TensorSpec([None], tf.int32), *scalars, *per_layer], autograph=False
        )

    @staticmethod
    def signature_of(model, x, y) -> tuple | None:
        """What a traced epoch is shared by, or None when the model is not one this loop computes exactly."""
        layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
        optimizer = getattr(model, "optimizer", None)
        if (
            type(optimizer) is not keras.optimizers.Adam
            or (optimizer.beta_1, optimizer.beta_2, optimizer.epsilon) != (0.9, 0.999, 1e-7)
            or optimizer.amsgrad or optimizer.weight_decay or optimizer.use_ema or getattr(optimizer, "gradient_accumulation_steps", None)
            or any(getattr(optimizer, c) is not None for c in ("clipnorm", "clipvalue", "global_clipnorm"))
            or isinstance(optimizer.get_config()["learning_rate"], dict)  # a schedule
            or len(model.outputs) != 1 or model.dtype_policy.name != "float32"
            or not layers or type(layers[0]) is not keras.layers.Flatten
        ):
            return None
        activations, dropout, l1, l2, i = [], [], [], [], 1
        while i < len(layers):
            dense = layers[i]
            if type(dense) is not keras.layers.Dense or not dense.use_bias or getattr(dense, "lora_enabled", False) or getattr(dense, "quantization_mode", None):
                return None
            if dense.activity_regularizer or dense.kernel_constraint or dense.bias_constraint or dense.bias_regularizer:
                return None
            reg = dense.kernel_regularizer
            if reg is not None and type(reg) is not keras.regularizers.L1L2:
                return None
            if i == len(layers) - 1:  # the head
                break
            activations.append(dense.activation)
            l1.append(bool(reg is not None and reg.l1))
            l2.append(bool(reg is not None and reg.l2))
            following = layers[i + 1] if i + 1 < len(layers) else None
            has_dropout = type(following) is keras.layers.Dropout
            if has_dropout and following.noise_shape is not None:
                return None
            dropout.append(bool(has_dropout and following.rate > 0))
            i += 2 if has_dropout else 1
        head = layers[-1]
        if head.kernel_regularizer is not None:
            return None
        if head.activation is keras.activations.softmax and model.loss == "sparse_categorical_crossentropy":
            kind = "softmax"
        elif head.activation is keras.activations.relu and head.units == 1 and model.loss == "mse":
            kind = "relu-mse"
        else:
            return None
        return (tuple(activations), tuple(dropout), tuple(l1), tuple(l2), kind, head.units, (x.dtype, tuple(x.shape[1:])), y.dtype)

    def hyperparameters(self, model) -> tuple:
        """Each hidden layer's L1, L2, dropout rate and dropout scale ``1 / (1 - rate)``, as the epoch takes them."""
        layers = [layer for layer in model.layers if type(layer) in (keras.layers.Dense, keras.layers.Dropout)]
        l1, l2, rate = [], [], []
        for k, layer in enumerate(layers[:-1]):
            if type(layer) is keras.layers.Dense:
                reg = layer.kernel_regularizer
                l1.append(float(reg.l1) if reg is not None else 0.0)
                l2.append(float(reg.l2) if reg is not None else 0.0)
                rate.append(0.0)
            else:
                rate[-1] = float(layer.rate)
        scale = [1 / (1 - r) for r in rate]  # in double precision, then float32: as keras.layers.Dropout's
        return tuple(np.asarray(v, np.float32) for v in (l1, l2, rate, scale))

    def load(self, model) -> None:
        """This loop's state from the model's: weights, Adam's slots and step (zeros when not built) and dropout seeds."""
        variables = model.trainable_variables
        optimizer = model.optimizer
        slots = optimizer_slots(optimizer, variables) if optimizer.built else None
        for k, v in enumerate(variables):
            self.weights[k].assign(v.value)
            self.momenta[k].assign(slots[k][0].value if slots else keras.ops.zeros_like(v))
            self.velocities[k].assign(slots[k][1].value if slots else keras.ops.zeros_like(v))
        self.iterations.assign(int(optimizer.iterations) if optimizer.built else 0)
        for var, state in zip(self.seeds, self._seed_states(model)):
            var.assign(state.value)

    def store(self, model, *, weights_only: bool = False) -> None:
        """The model's state from this loop's (after every epoch, the weights; at the end, everything)."""
        for v, w in zip(model.trainable_variables, self.weights):
            v.assign(w.value())  # a value of known shape: Keras checks it
        if weights_only:
            return
        optimizer = model.optimizer
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        for (m, v), k in zip(optimizer_slots(optimizer, model.trainable_variables), range(len(self.weights))):
            m.assign(self.momenta[k].value())
            v.assign(self.velocities[k].value())
        optimizer.iterations.assign(self.iterations.value())
        for state, var in zip(self._seed_states(model), self.seeds):
            state.assign(var.value())

    @staticmethod
    def _seed_states(model) -> list:
        return [layer.seed_generator.state for layer in model.layers if type(layer) is keras.layers.Dropout and layer.rate > 0]

    def _forward(self, x, training: bool, rate, scale):
        import tensorflow as tf

        h = tf.reshape(tf.cast(x, tf.float32), [tf.shape(x)[0], -1])
        d = 0
        for k, activation in enumerate(self.activations):
            h = activation(tf.nn.bias_add(tf.matmul(h, self.weights[2 * k]), self.weights[2 * k + 1]))
            if training and self.dropout[k]:
                # As keras.layers.Dropout draws it: the layer's seed state, then one step on.
                seed = tf.cast(tf.math.floormod(self.seeds[d], tf.int32.max - 1), tf.int32)
                self.seeds[d].assign_add(tf.constant([0, 1], tf.int64))
                # tf.nn.experimental.stateless_dropout's arithmetic for a rate known when tracing (as Keras's is).
                keep = tf.random.stateless_uniform(tf.shape(h), seed=seed, dtype=tf.float32, alg=None) >= rate[k]
                h = tf.where(keep, h * scale[k], tf.constant(0.0))
                d += 1
        out = tf.nn.bias_add(tf.matmul(h, self.weights[-2]), self.weights[-1])
        return out if self.head == "softmax" else tf.nn.relu(out)

    def _loss(self, y, out, l1, l2):
        """The compiled loss (mean over the batch) plus the kernels' regularisation, and each sample's accuracy."""
        import tensorflow as tf

        if self.head == "softmax":
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(y, tf.int64), logits=out))
            hit = tf.cast(tf.equal(tf.argmax(tf.nn.softmax(out), axis=-1, output_type=tf.int32), tf.cast(y, tf.int32)), tf.float32)
        else:
            loss = tf.reduce_mean(tf.reduce_mean(tf.square(tf.expand_dims(y, -1) - out), axis=-1))
            hit = tf.cast(tf.equal(tf.round(tf.reshape(out, tf.shape(y))), y), tf.float32)
        for k in range(len(self.activations)):
            kernel = self.weights[2 * k]
            if self.l1[k]:
                loss += l1[k] * tf.reduce_sum(tf.abs(kernel))
            if self.l2[k]:
                loss += l2[k] * tf.reduce_sum(tf.square(kernel))
        return loss, hit

    def _adam(self, grads, lr):
        """``keras.optimizers.Adam``'s step, the same arithmetic in the same order."""
        import tensorflow as tf

        step = tf.cast(self.iterations + 1, tf.float32)
        alpha = lr * tf.sqrt(1 - tf.pow(tf.constant(0.999), step)) / (1 - tf.pow(tf.constant(0.9), step))
        for w, g, m, v in zip(self.weights, grads, self.momenta, self.velocities):
            m.assign_add(tf.multiply(tf.subtract(g, m), 1 - 0.9))
            v.assign_add(tf.multiply(tf.subtract(tf.square(g), v), 1 - 0.999))
            w.assign_sub(tf.divide(tf.multiply(m, alpha), tf.add(tf.sqrt(v), 1e-7)))
        self.iterations.assign_add(1)

    def _epoch(self, x, y, vx, vy, order, batch, lr, l1, l2, rate, scale):
        """One epoch over ``order`` in batches, then the validation pass: (loss, accuracy, val_loss, val_accuracy)."""
        import tensorflow as tf

        def passes(xs, ys, rows, size, train: bool):
            n = tf.shape(rows)[0]

            def body(i, total, hits, count):
                idx = rows[i * size : tf.minimum((i + 1) * size, n)]
                xb, yb = tf.gather(xs, idx), tf.gather(ys, idx)
                if train:
                    with tf.GradientTape() as tape:
                        loss, hit = self._loss(yb, self._forward(xb, True, rate, scale), l1, l2)
                    self._adam(tape.gradient(loss, self.weights), lr)
                else:
                    loss, hit = self._loss(yb, self._forward(xb, False, rate, scale), l1, l2)
                b = tf.cast(tf.shape(idx)[0], tf.float32)
                return i + 1, total + loss * b, hits + tf.reduce_sum(hit), count + b

            # Each step needs the previous one's weights: one iteration at a time.
            _, total, hits, count = tf.while_loop(
                lambda i, *_: i < (n + size - 1) // size, body, [tf.constant(0), 0.0, 0.0, 0.0], parallel_iterations=1
            )
            return total / count, hits / count

        loss, accuracy = passes(x, y, order, batch, True)
        val_loss, val_accuracy = passes(vx, vy, tf.range(tf.shape(vx)[0]), EVAL_BATCH, False)
        return loss, accuracy, val_loss, val_accuracy


def optimizer_slots(optimizer, variables) -> list[tuple]:
    """(momentum, velocity) of each of ``variables`` in a built Adam: ``optimizer.variables`` lists the iteration
    count, the learning rate, then each variable's momentum and velocity in order."""
    slots = optimizer.variables[2:]
    pairs = [(slots[2 * k], slots[2 * k + 1]) for k in range(len(variables))]
    if len(slots) != 2 * len(variables) or any(m.shape != v.shape or s.shape != v.shape for (m, s), v in zip(pairs, variables)):
        raise AssertionError("keras.optimizers.Adam's variables are not [iterations, learning_rate, (momentum, velocity) per variable]")
    return pairs


def _build_state(model, x, y) -> None:
    """Create the optimizer's, loss's and metrics' variables now: a compiled loop may not create them."""
    pred = model(x)
    model.compute_loss(x, y, pred)
    model.compute_metrics(x, y, pred)
    model.optimizer.build(model.trainable_variables)
    model.reset_metrics()


def permute_batch(xb, key):
    """A random row and column permutation of each matrix in the batch (padding included), from ``key``."""
    import tensorflow as tf

    b = tf.shape(xb)[0]
    rows = tf.argsort(tf.random.stateless_uniform((b, xb.shape[1]), seed=key), axis=1)
    cols = tf.argsort(tf.random.stateless_uniform((b, xb.shape[2]), seed=tf.random.experimental.stateless_fold_in(key, 1)), axis=1)
    return tf.gather(tf.gather(xb, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)


def _each_batch(step, x, y, order, batch: int, transform=None, key=None, *, static: bool = False) -> None:
    """``step((x[i], y[i]))`` for consecutive batches of the indices ``order``, inside the graph.

    Every batch, the smaller last one too, runs in one ``tf.while_loop`` whose batches have an unknown size:
    ``step`` is traced once, and the graph to optimise is one step's. For XLA (``static``), which needs static
    shapes, and for convolutions, whose CPU kernels differ with an unknown batch size (other numbers),
    the full batches run in the loop and the remainder after it: ``step`` is traced twice. Dense networks
    get the same numbers either way.
    """
    import tensorflow as tf

    def take(i, k=0):
        xb, yb = tf.nest.map_structure(lambda a: tf.gather(a, i), (x, y))
        if xb.dtype.is_integer:  # compact (int8) matrices become floats one batch at a time
            xb = tf.cast(xb, tf.float32)
        if transform is not None:
            xb = transform(xb, tf.random.experimental.stateless_fold_in(key, k))
        return xb, yb

    n = int(order.shape[0])
    if not static:

        def any_body(i):
            step(take(order[i * batch : tf.minimum((i + 1) * batch, n)], i))
            return i + 1

        # Each step needs the previous one's weights: one iteration at a time.
        tf.while_loop(lambda i: i < math.ceil(n / batch), any_body, [tf.constant(0)], parallel_iterations=1)
        return
    full, rest = divmod(n, batch)
    if full:
        rows = tf.reshape(order[: full * batch], (full, batch))

        def body(i):
            step(take(rows[i], i))
            return i + 1

        # Each step needs the previous one's weights: one iteration at a time.
        tf.while_loop(lambda i: i < full, body, [tf.constant(0)], parallel_iterations=1)
    if rest:
        step(take(order[full * batch :], full))


def _floats(results: dict) -> dict[str, float]:
    return {k: float(v) for k, v in results.items()}


PREDICT_BATCH = 2048


def predict(model, x: np.ndarray, targets: list[Target], head: str) -> dict[str, np.ndarray]:
    """Integer Hodge numbers for padded matrices ``x`` (N, rows, cols)."""
    if isinstance(model, SvmModel):
        return decode(model.predict(x), targets, head)
    # Eager calls in large batches: model.predict traces a new function per call and input size, which costs
    # more than the whole forward pass for these small models.
    x = np.asarray(x)
    floats = (lambda a: a.astype(np.float32)) if x.dtype.kind in "iu" else (lambda a: a)  # int8 4-fold matrices
    chunks = [model(floats(x[i : i + PREDICT_BATCH]), training=False) for i in range(0, len(x), PREDICT_BATCH)] or [
        model(floats(x[:0]), training=False)
    ]
    if isinstance(chunks[0], dict):
        outputs = {k: np.concatenate([keras.ops.convert_to_numpy(c[k]) for c in chunks]) for k in chunks[0]}
    else:
        outputs = np.concatenate([keras.ops.convert_to_numpy(c) for c in chunks])
    return decode(outputs, targets, head)


def derive(pred: dict[str, np.ndarray], matrices: np.ndarray, d: dict, euler: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The reported Hodge numbers from the network's: with ``physics``, h21 = h11 - euler/2 exactly.

    On 4-folds h31 = euler/6 - 8 - h11 + h21 and h22 = 44 + 4 h11 - 2 h21 + 4 h31 (``cicy4.derived_hodge``). The
    exact Euler numbers: ``euler`` when given (an imported list's, checked at import; the unpermuted matrices'),
    else computed from ``matrices``.
    """
    if d.get("physics") and d.get("dataset") and cicy_data.is_imported(d["dataset"]):
        from . import cicy4

        if euler is None:
            euler = cicy4.exact_euler(matrices)
        h31, h22 = cicy4.derived_hodge(pred["h11"], pred["h21"], np.asarray(euler, dtype=np.int64))
        pred = {**pred, "h31": h31, "h22": h22}
    elif d.get("physics"):
        if euler is None:
            euler, _ = cicy_data.exact_invariants(matrices)
        pred = {**pred, "h21": pred["h11"] - euler // 2}
    return {name: pred[name] for name in d.get("targets") or pred}


def predict_matrices(model, matrices: np.ndarray, targets: list[Target], config: dict) -> dict[str, np.ndarray]:
    """Integer Hodge numbers for padded configuration matrices, as the config's data section says to read them."""
    d = config["data"]
    return derive(predict(model, inputs_for(matrices, d), targets, config["model"]["head"]), matrices, d)


PERMUTED_SEED = 12345  # the fixed random permutations behind test_permuted_* metrics


def evaluate(model, prepared: Prepared, head: str) -> dict[str, float]:
    """Scores on every split, plus ``test_permuted``: the test matrices with rows and columns randomly permuted.

    A model that predicts h11 without ``data.physics`` also gets ``<split>_h21_physics_accuracy``: how often
    h11 - euler/2 (exact Euler number) is the true h21, i.e. what the physics-informed head would score.
    """
    d = prepared.data
    splits = [(s, prepared.x[s], prepared.matrices.get(s)) for s in SPLITS if len(prepared.x[s])]
    if prepared.matrices and len(prepared.matrices["test"]):
        permuted = cicy_data.permute(prepared.matrices["test"], PERMUTED_SEED)
        splits.append(("test_permuted", inputs_for(permuted, d), permuted))
    metrics: dict[str, float] = {}
    src = cicy_data.source(d["dataset"]) if d.get("dataset") else None
    for name, x, matrices in splits:
        split = "test" if name == "test_permuted" else name
        raw = predict(model, x, prepared.targets, head)
        euler = _exact_euler(prepared, split, matrices, raw, src)
        pred = derive(raw, matrices, d, euler) if matrices is not None else raw
        metrics.update(scores(pred, prepared.y[split], name))
        if matrices is not None and "h11" in raw and not d.get("physics") and src is not None and src.kind == "shipped":
            true = prepared.dataset.y("h21")[prepared.index[split]]
            physics = derive(raw, matrices, {"physics": True, "targets": ["h21"]}, euler)["h21"]
            metrics[f"{name}_h21_physics_accuracy"] = float(np.mean(physics == true))
    return metrics


def _exact_euler(prepared: Prepared, split: str, matrices, raw: dict, src) -> np.ndarray | None:
    """The split's exact Euler numbers where ``derive`` needs them (4-folds: the list's; shipped 3-folds: computed)."""
    d = prepared.data
    if src is not None and src.kind == "cicy4":
        return prepared.dataset.frame["euler"].to_numpy()[prepared.index[split]]
    if matrices is not None and src is not None and src.kind == "shipped" and (d.get("physics") or "h11" in raw):
        return cicy_data.exact_invariants(prepared.matrices[split])[0]  # the unpermuted matrices': invariant
    return None


def test_misses(model, prepared: Prepared, head: str) -> list[dict]:
    """The test matrices a finished model gets wrong: each one's ``id`` in the list (a number, or an imported list's
    text; its row number where the list has no ids) and, per scored target, the true and the predicted value
    (``h11``, ``h11_pred``).

    Accuracy says how many; this says which, so the misses of several seeds or models can be compared: matrices
    every model misses point at the data (rare classes, a hard corner of the list), not at one training.
    """
    d = prepared.data
    matrices = prepared.matrices.get("test")
    if not len(prepared.x["test"]):
        return []
    raw = predict(model, prepared.x["test"], prepared.targets, head)
    src = cicy_data.source(d["dataset"]) if d.get("dataset") else None
    pred = derive(raw, matrices, d, _exact_euler(prepared, "test", matrices, raw, src)) if matrices is not None else raw
    frame = prepared.dataset.frame
    rows = prepared.index["test"]
    ids = frame["id"].to_numpy()[rows] if "id" in frame else rows
    true = prepared.y["test"]
    wrong = np.zeros(len(rows), dtype=bool)
    for name, p in pred.items():
        wrong |= p != true[name]
    misses = []
    for i in np.flatnonzero(wrong):
        record = {"id": ids[i].item() if isinstance(ids[i], np.generic) else ids[i]}
        for name, p in pred.items():
            record[name], record[f"{name}_pred"] = int(true[name][i]), int(p[i])
        misses.append(record)
    return misses


class ProgressBar(keras.callbacks.Callback):
    """A rich progress bar over epochs showing the latest loss and validation accuracy."""

    def __init__(self, epochs: int, label: str = "epoch"):
        super().__init__()
        self.epochs, self.label = epochs, label

    def on_train_begin(self, logs=None):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn(self.label), MofNCompleteColumn(), BarColumn(), TimeRemainingColumn(), TextColumn("{task.fields[status]}")
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=self.epochs, status="")

    def on_epoch_end(self, epoch, logs=None):
        shown = ("loss", "val_loss", "val_accuracy")
        status = " ".join(f"{k}={v:.4g}" for k, v in (logs or {}).items() if k in shown)
        self.progress.update(self.task, advance=1, status=status)

    def on_train_end(self, logs=None):
        self.progress.stop()
