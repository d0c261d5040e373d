"""keras-tuner as a second search engine over the same study file, for comparison with Optuna.

The study's space is sampled through a keras-tuner ``HyperParameters`` object (``HpTrial`` gives it
Optuna's suggest interface), so the model is built from the very same run config mapping. Each
keras-tuner trial is logged afterwards as an MLflow child run in the experiment ``<study>-keras-tuner``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import keras
import keras_tuner

from . import space, tracking
from .config import flatten
from .models import build
from .objective import trial_seed
from .studyfile import StudySpec
from .training import compile_model, encode, prepare

ALGORITHMS = {"random": keras_tuner.RandomSearch, "bayesian": keras_tuner.BayesianOptimization}


class HpTrial:
    """Optuna's ``suggest_*`` calls answered by keras-tuner hyperparameters."""

    def __init__(self, hp: keras_tuner.HyperParameters):
        self.hp = hp

    def suggest_int(self, name, low, high, step=1, log=False):
        return self.hp.Int(name, low, high, step=step if not log else None, sampling="log" if log else "linear")

    def suggest_float(self, name, low, high, step=None, log=False):
        return self.hp.Float(name, low, high, step=step, sampling="log" if log else "linear")

    def suggest_categorical(self, name, choices):
        return self.hp.Choice(name, list(choices))


class CicyHyperModel(keras_tuner.HyperModel):
    def __init__(self, spec: StudySpec, prepared):
        super().__init__(name=spec.name)
        self.spec = spec
        self.prepared = prepared
        self.histories: dict[str, dict] = {}  # per-epoch curves by trial values (keras-tuner keeps only the best epoch)

    def config(self, hp) -> dict:
        return self.spec.config_for(space.sample(self.spec.params, HpTrial(hp), self.spec.base), seed=self.spec.seed)

    def build(self, hp):
        config = self.config(hp)
        keras.utils.set_random_seed(config["seed"])
        model = build(config, self.prepared.shape, self.prepared.targets)
        steps = math.ceil(len(self.prepared.x["train"]) / config["train"]["batch_size"])
        compile_model(model, config, self.prepared.targets, steps)
        return model

    def fit(self, hp, model, *args, **kwargs):
        config = self.config(hp)
        head, p = config["model"]["head"], self.prepared
        kwargs.update(epochs=config["train"]["epochs"], batch_size=config["train"]["batch_size"], verbose=0)
        kwargs.pop("x", None), kwargs.pop("y", None), kwargs.pop("validation_data", None)
        history = model.fit(
            p.x["train"], encode(p.y["train"], p.targets, head),
            validation_data=(p.x["val"], encode(p.y["val"], p.targets, head)), **kwargs
        )
        self.histories[_key(hp)] = history.history
        return history


def _key(hp) -> str:
    return json.dumps(hp.values, sort_keys=True, default=str)


@dataclass
class TuneSummary:
    tuner: keras_tuner.Tuner
    best_val_accuracy: float
    parent_run_id: str
    n_trials: int


def tune(spec: StudySpec, *, max_trials: int | None = None, algorithm: str = "random", tracking_uri: str | None = None,
         directory: str | None = None, overwrite: bool = False) -> TuneSummary:
    """Search the study's space with keras-tuner (validation accuracy, maximised) and log every trial to MLflow."""
    from .errors import CicyError

    if algorithm not in ALGORITHMS:
        raise CicyError(f"unknown keras-tuner algorithm {algorithm!r}: choose one of {', '.join(ALGORITHMS)}")
    if spec.family == "svm" or len(spec.objectives) > 1 or spec.objectives[0].metric != "val_accuracy":
        raise CicyError("the keras-tuner engine compares single-objective val_accuracy studies of Keras models")
    if any(p.name.startswith("data.") for p in spec.params):
        raise CicyError("the keras-tuner engine trains every trial on one data split: data.* cannot be searched")
    from .studyfile import check_budget

    check_budget(max_trials, n_trials_name="--max-trials")
    client = tracking.client(tracking_uri)
    example = spec.config_for(space.sample(spec.params, space.Example(), spec.base), seed=spec.seed)
    prepared = prepare(example)
    inputs = tracking.dataset_inputs(example["data"], prepared.dataset.hash, prepared.index)  # one split for every trial
    hypermodel = CicyHyperModel(spec, prepared)
    tuner = ALGORITHMS[algorithm](
        hypermodel,
        objective=keras_tuner.Objective("val_accuracy", "max"),
        max_trials=max_trials or spec.n_trials,
        seed=trial_seed(spec.seed, 0),
        directory=directory or str(tracking.local_home() / "keras-tuner"),
        project_name=spec.name,
        overwrite=overwrite,
    )
    tuner.search()
    experiment = f"{spec.name}-keras-tuner"
    parent = tracking.Run.start(client, experiment, run_name=f"{spec.name} ({algorithm})", tags={"study": spec.name, "engine": "keras-tuner"})
    parent.log_inputs(inputs)
    trials = list(tuner.oracle.trials.values())
    for t in trials:
        run = tracking.Run.start(client, experiment, run_name=f"kt-{t.trial_id}", parent_run_id=parent.run_id,
                                 tags={"study": spec.name, "engine": "keras-tuner", "trial": t.trial_id, "state": t.status.lower()})
        run.log_inputs(inputs)
        if t.status == "COMPLETED":
            run.log_params(flatten(hypermodel.config(t.hyperparameters)))
            for name, values in hypermodel.histories.get(_key(t.hyperparameters), {}).items():
                for step, value in enumerate(values):
                    run.log_metrics({f"epoch_{name}": value}, step=step, flush_after=float("inf"))
            run.log_metrics({"val_accuracy": t.score}, flush_after=float("inf"))
        run.end("FINISHED" if t.status == "COMPLETED" else "FAILED")
    scores = [t.score for t in trials if t.status == "COMPLETED" and t.score is not None]
    best = max(scores) if scores else math.nan
    parent.log_params({"algorithm": algorithm, "max_trials": max_trials or spec.n_trials})
    parent.log_metrics({"best_val_accuracy": best, "n_trials": len(trials)})
    parent.end("FINISHED")
    return TuneSummary(tuner, best, parent.run_id, len(trials))
