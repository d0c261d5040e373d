"""Where a study trial's time goes, by phase, and the quickstart against a hand-written Optuna + Keras peer, in one run.

    .venv/bin/python -m bench.trial [--trials 30] [--blocks 3] [--inception-epochs 2]

Two searches of the quickstart's space, budget and split (``studies/quickstart.yaml``) alternate in ``--blocks``
blocks, so that drift in the machine's load falls on both:

- ``product``: ``search.study.run`` (what ``cicy-search study run`` does: SQLite Optuna storage, MLflow tracking in a
  SQLite store, the background uploader), resumed block after block;
- ``peer``: what one writes by hand: ``optuna.create_study`` (in memory) with the same TPE and median pruner,
  ``optuna_integration.KerasPruningCallback`` and ``MLflowCallback`` (the same kind of MLflow store), and
  ``model.fit`` of the same dense network (Keras's defaults, ``keras.backend.clear_session`` and the trial's seed
  before each trial) on the same arrays.

The product's trials are cut into phases by timers the bench wraps around the product's own functions (no flag in
the product): data (``Objective.prepared``), build (``models.build``, ``compile_model``, ``_build_state``), trace (the
first epoch's excess over the median later epoch: tracing and graph optimisation; and ``training._traced_epoch``,
a model's own epoch traced before its first), epochs, evaluation (scoring
every split), pruning reports (``KerasPruningCallback``), tracking on the trial's thread (``Run`` calls and the
rest of the tracked run outside ``fit``), Optuna (sampling, ask, tell and the study's callbacks: the trial's
``Study.optimize`` outside the objective, the suggest calls and user attributes inside it) and other (the rest of
``fit``: seeding, arrays to tensors, the wait at the first epoch's end for the previous trial's MLflow writes; the
objective's Keras reset, ``compat.reset_keras``). An epoch is timed by a callback put first in
``fast_fit``'s list: from its start to its end, before the metric logging and the pruning report. One inception trial (``--inception-epochs``, the default inception network) is cut the
same way. Trial time is the sum of each trial's ``Study.optimize``; the load average is recorded at every block.
TensorFlow's start-up in the process (a first ``model.fit``) is paid before both, untimed; what only the product
does once in a process (the exact invariants behind ``*_h21_physics_accuracy``) stays in its first trial.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PHASES = ("data", "build", "trace", "epochs", "evaluation", "pruning", "tracking", "optuna", "other")
RESULTS = Path(__file__).parent / "results"


class Phases:
    """Seconds per phase of the trial now running (``open`` starts one), and every finished trial's."""

    def __init__(self):
        self.trials: list[dict] = []
        self.now: dict | None = None

    def open(self) -> None:
        self.now = {"raw": {}, "epochs": []}
        self.trials.append(self.now)

    def add(self, key: str, seconds: float) -> None:
        if self.now is not None and threading.current_thread() is threading.main_thread():  # the trial's thread only
            self.now["raw"][key] = self.now["raw"].get(key, 0.0) + seconds


@contextmanager
def wrapped(phases: Phases):
    """Timers around the product's functions for as long as inside; the originals are put back after."""
    import keras
    import optuna
    from optuna_integration import KerasPruningCallback

    from cicy_search import compat, tracking, training
    from cicy_search.search import objective
    from cicy_search.tracking import runner

    originals: list = []

    def wrap(owner, name: str, key: str, before=None):
        fn = getattr(owner, name)
        originals.append((owner, name, fn))

        def timed(*a, **k):
            if before:
                before()
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                phases.add(key, time.perf_counter() - t0)

        setattr(owner, name, timed)

    wrap(optuna.Study, "optimize", "trial")
    wrap(objective.Objective, "__call__", "objective", before=phases.open)
    wrap(objective.Objective, "prepared", "data")
    for name in ("build", "compile_model", "_build_state"):
        wrap(training, name, "build")
    wrap(training, "evaluate", "evaluation")
    wrap(training, "_traced_epoch", "trace_calls")  # a model's own epoch, traced before its first epoch
    wrap(KerasPruningCallback, "on_epoch_end", "pruning")
    for name in ("log_metrics", "log_params", "log_inputs", "later", "log_artifacts"):
        wrap(tracking.Run, name, "tracking_calls")
    wrap(runner, "fit", "fit")  # the tracked run's fit (the objective's untracked path is not timed)
    wrap(objective.space, "sample", "optuna_calls")  # the objective's suggest calls
    wrap(optuna.Trial, "set_user_attr", "optuna_calls")
    wrap(compat, "reset_keras", "reset")

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            if phases.now is not None:
                phases.now["epochs"].append(time.perf_counter() - self.t0)

    timer, fast_fit = EpochTimer(), training.fast_fit
    originals.append((training, "fast_fit", fast_fit))

    def timed_fast_fit(model, train, val, *, callbacks=(), **options):
        # The timer first among the callbacks: an epoch ends before the metric logging and pruning reports run.
        return fast_fit(model, train, val, callbacks=[timer, *callbacks], **options)

    training.fast_fit = timed_fast_fit
    try:
        yield timer
    finally:
        for owner, name, fn in reversed(originals):
            setattr(owner, name, fn)


def split(trial: dict) -> dict:
    """One trial's raw timers -> the phases (seconds), which add up to its ``Study.optimize`` time."""
    raw, epochs = trial["raw"], trial["epochs"]
    median = statistics.median(epochs[1:]) if len(epochs) > 1 else 0.0
    excess = max(0.0, epochs[0] - median) if epochs else 0.0
    out = {"data": raw.get("data", 0.0), "build": raw.get("build", 0.0), "trace": excess + raw.get("trace_calls", 0.0),
           "epochs": sum(epochs) - excess,
           "evaluation": raw.get("evaluation", 0.0), "pruning": raw.get("pruning", 0.0)}
    # The epoch timer runs first among the callbacks: the pruning reports and metric logging fall outside epochs.
    fit_rest = raw.get("fit", 0.0) - sum(epochs) - out["build"] - out["evaluation"] - raw.get("trace_calls", 0.0)
    calls, reset = raw.get("optuna_calls", 0.0), raw.get("reset", 0.0)
    out["tracking"] = raw.get("objective", 0.0) - raw.get("fit", 0.0) - out["data"] - calls - reset + raw.get("tracking_calls", 0.0)
    out["optuna"] = raw.get("trial", 0.0) - raw.get("objective", 0.0) + calls
    out["other"] = max(0.0, fit_rest - out["pruning"] - raw.get("tracking_calls", 0.0)) + reset
    out["total"] = raw.get("trial", 0.0)
    out["n_epochs"] = len(epochs)
    return out


def summary(rows: list[dict]) -> dict:
    total = sum(r["total"] for r in rows)
    out = {"trials": len(rows), "trial_s": total, "median_trial_s": statistics.median(r["total"] for r in rows)}
    out["phase_s"] = {p: sum(r[p] for r in rows) for p in PHASES}
    out["phase_share"] = {p: v / total for p, v in out["phase_s"].items()}
    out["outside_epochs_share"] = 1 - out["phase_s"]["epochs"] / total
    return out


def peer_objective(prepared, mlflow_callback, spec):
    """A hand-written objective on the quickstart's space: the talk's dense network, ``model.fit``, pruning callback."""
    import keras
    from optuna_integration import KerasPruningCallback

    from cicy_search.search.objective import trial_seed

    x = {s: prepared.x[s].astype("float32") for s in ("train", "val")}
    y = {s: (prepared.y[s]["h11"] - prepared.targets[0].low).astype("int32") for s in ("train", "val")}
    classes = prepared.targets[0].n_classes

    @mlflow_callback.track_in_mlflow()
    def objective(trial):
        keras.backend.clear_session()
        keras.utils.set_random_seed(trial_seed(spec.seed, trial.number))
        depth = trial.suggest_int("model.depth", 1, 4)
        width = trial.suggest_int("model.width", 16, 256, log=True)
        l2 = trial.suggest_float("model.l2", 1e-6, 1e-2, log=True)
        dropout = trial.suggest_float("model.dropout", 0.0, 0.4, step=0.05)
        lr = trial.suggest_float("train.learning_rate", 3e-4, 1e-2, log=True)
        layers = [keras.Input(prepared.shape), keras.layers.Flatten()]
        for _ in range(depth):
            layers.append(keras.layers.Dense(width, activation="relu", kernel_regularizer=keras.regularizers.L2(l2)))
            if dropout:
                layers.append(keras.layers.Dropout(dropout))
        model = keras.Sequential([*layers, keras.layers.Dense(classes, activation="softmax")])
        model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        h = model.fit(x["train"], y["train"], validation_data=(x["val"], y["val"]), epochs=spec.base["train"]["epochs"],
                      batch_size=spec.base["train"]["batch_size"], verbose=0,
                      callbacks=[KerasPruningCallback(trial, "val_accuracy")])
        return h.history["val_accuracy"][-1]

    return objective


def warm_up(prepared) -> None:
    """One epoch of ``model.fit`` and a prediction, untimed: TensorFlow's start-up costs fall on neither search."""
    import keras

    model = keras.Sequential([keras.Input(prepared.shape), keras.layers.Flatten(), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(prepared.targets[0].n_classes, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    y = prepared.y["train"]["h11"] - prepared.targets[0].low
    model.fit(prepared.x["train"].astype("float32"), y, epochs=1, verbose=0)
    model(prepared.x["val"].astype("float32"))
    keras.backend.clear_session()


def inception_trial(folder: Path, epochs: int, phases: Phases) -> dict:
    """One trial of the default inception network through a one-trial study of the same kind."""
    from cicy_search.search import study as studies
    from cicy_search.search import studyfile

    raw = {"study": "bench-inception", "seed": 0, "base": "inception", "train": {"epochs": epochs},
           "space": {"train.learning_rate": {"type": "float", "low": 3.0e-4, "high": 1.0e-2, "log": True}},
           "objective": {"metric": "val_accuracy", "direction": "maximize"}, "budget": {"n_trials": 1}}
    one = studyfile.parse(raw)
    first = len(phases.trials)
    studies.run(one, storage=f"sqlite:///{folder / 'inception.db'}", tracking_uri=f"sqlite:///{folder / 'inception-mlflow.db'}",
                report=False)
    return split(phases.trials[first])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.trial", description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30, help="trials of each search (the quickstart's budget is 30)")
    parser.add_argument("--blocks", type=int, default=3, help="blocks each search is cut into, alternating")
    parser.add_argument("--inception-epochs", type=int, default=2, help="epochs of the inception trial (0: none)")
    parser.add_argument("--no-peer", action="store_true", help="the product's phases only")
    parser.add_argument("--out", default=str(RESULTS / "trial.json"))
    args = parser.parse_args(argv)

    import warnings

    import optuna
    from optuna_integration import MLflowCallback

    warnings.filterwarnings("ignore", category=FutureWarning)  # MLflowCallback is deprecated, still what a peer uses
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    from cicy_search.search import study as studies
    from cicy_search.search import studyfile
    from cicy_search.training import prepare

    from .throughput import machine

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = studyfile.load(Path(__file__).parent.parent / "studies" / "quickstart.yaml")
    phases = Phases()
    folder = Path(tempfile.mkdtemp(prefix="bench-trial-"))
    storage, uri = f"sqlite:///{folder / 'optuna.db'}", f"sqlite:///{folder / 'mlflow.db'}"
    peer_study = optuna.create_study(direction="maximize", sampler=spec.sampler_object(), pruner=spec.pruner_object())
    mlflow_cb = MLflowCallback(tracking_uri=f"sqlite:///{folder / 'peer-mlflow.db'}", metric_name="val_accuracy")
    peer = None if args.no_peer else peer_objective(prepare(spec.config_for({}, seed=spec.seed, name="peer")), mlflow_cb, spec)
    warm_up(prepare(spec.config_for({}, seed=spec.seed, name="warm-up")))
    loads, seconds = [os.getloadavg()], {"product": 0.0, "peer": 0.0}
    sizes = [args.trials * (b + 1) // args.blocks - args.trials * b // args.blocks for b in range(args.blocks)]
    with wrapped(phases):
        done = 0
        for b, size in enumerate(sizes):
            arms = [("product", None), ("peer", peer)] if b % 2 == 0 else [("peer", peer), ("product", None)]
            for arm, fn in arms:
                if arm == "peer" and fn is None:
                    continue
                phases.now = None  # the peer's Study.optimize is not a product trial's
                t0 = time.perf_counter()
                if arm == "product":
                    studies.run(spec, storage=storage, tracking_uri=uri, n_trials=done + size, report=False)
                else:
                    peer_study.optimize(fn, n_trials=size, callbacks=[mlflow_cb])
                seconds[arm] += time.perf_counter() - t0
                loads.append(os.getloadavg())
            done += size
        product_trials = len(phases.trials)
        phases.now = None
        inception = inception_trial(folder, args.inception_epochs, phases) if args.inception_epochs else None
    rows = [split(t) for t in phases.trials[:product_trials]]
    product = summary(rows)
    product_study = studies.load(spec.name, storage=storage)
    product["best_val_accuracy"] = product_study.best_value
    product["wall_s"] = seconds["product"]
    product["values"] = [t.value for t in product_study.trials]  # the same on every run of the same code: reproducible
    out = {"command": "python -m bench.trial " + " ".join(sys.argv[1:] if argv is None else argv), "machine": machine(False), "load_average": loads,
           "product": product, "product_trials": rows, "inception_trial": inception}
    if peer is not None:
        peer_trial_s = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in peer_study.trials)
        out["peer"] = {"trials": len(peer_study.trials), "trial_s": peer_trial_s, "wall_s": seconds["peer"],
                       "values": [t.value for t in peer_study.trials],
                       "best_val_accuracy": peer_study.best_value,
                       "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in peer_study.trials)}
        out["peer_over_product_trial_s"] = peer_trial_s / product["trial_s"]
    print_table(out)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1, default=str))
    print(f"written to {args.out}")
    return out


def print_table(out: dict) -> None:
    p = out["product"]
    print(f"load average: {' -> '.join(f'{a[0]:.1f}' for a in out['load_average'])}")
    print(f"product: {p['trials']} trials, {p['trial_s']:.1f} s of trials (median {p['median_trial_s']:.2f} s), "
          f"best val_accuracy {p['best_val_accuracy']:.4f}, outside epochs {p['outside_epochs_share']:.0%}")
    for name in PHASES:
        print(f"  {name:<11} {p['phase_s'][name]:8.2f} s  {p['phase_share'][name]:6.1%}")
    if out.get("inception_trial"):
        i = out["inception_trial"]
        print(f"inception trial ({i['n_epochs']} epochs): {i['total']:.1f} s: " + ", ".join(f"{k} {i[k]:.2f}" for k in PHASES))
    if "peer" in out:
        q = out["peer"]
        print(f"peer: {q['trials']} trials ({q['pruned']} pruned), {q['trial_s']:.1f} s of trials, best val_accuracy "
              f"{q['best_val_accuracy']:.4f}; peer / product trial time = {out['peer_over_product_trial_s']:.2f}x")


if __name__ == "__main__":
    main()
