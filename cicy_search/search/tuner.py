"""keras-tuner as a second search engine over the same study file.

keras-tuner's oracle (``random``, ``bayesian`` or ``hyperband``) proposes the values of the study's space;
each trial is then trained by the project's one path, ``Objective.train`` -> ``runner.run_tracked`` (the fast
epoch loop, early stopping, learning-rate schedule, mixed precision), exactly as an Optuna trial with the same
values, and logged live as the MLflow run ``trial-N`` under the parent run ``STUDY (ALGORITHM)`` of the
experiment ``STUDY-keras-tuner``: the same params, per-epoch curves and ``state`` tag (complete, failed,
interrupted) as an Optuna trial, so a crash or Ctrl-C mid-search leaves every finished trial in MLflow.

The tuner's folder (``DIRECTORY/STUDY-ALGORITHM``) holds the oracle's state and the link to the parent run:
the same command again continues the search (an interrupted trial is run again) under the same parent run.
Ctrl-C and SIGTERM take effect while a model trains, or else as the next one starts (``signals.Interrupts``): never while
keras-tuner writes its state, which a signal there could leave cut short or out of step with MLflow.

Hyperband: a trial trains to ``tuner/epochs``; one promoted to a later round continues its predecessor's saved
model (weights and optimizer state) from ``tuner/initial_epoch``, so its run logs, and counts, only the epochs
it trained, at their epoch numbers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras_tuner
import optuna

from . import space
from .. import signals, tracking
from ..compat import checkpoint_path
from ..config import dump_yaml
from ..errors import CicyError, one_line
from .objective import Objective, objective_values, trial_seed
from .studyfile import StudySpec, check_budget

ALGORITHMS = ("random", "bayesian", "hyperband")
FAILURES_IN_A_ROW = 3  # keras-tuner stops the search then, as a study does (study.GIVE_UP_AFTER)
OPTUNA_HYPERBAND = {"min_resource": 1, "bootstrap_count": 0}  # Optuna's HyperbandPruner settings keras-tuner also has


def check(spec: StudySpec, algorithm: str) -> dict:
    """What keras-tuner cannot honour in a study, as one ``CicyError`` line; else hyperband's settings.

    Random and Bayesian search apply the study's Optuna pruner to their trials (``TrialRunner``); Hyperband
    is its own early stopping, and takes only Optuna's ``hyperband`` pruner, as its settings.
    """
    if algorithm not in ALGORITHMS:
        raise CicyError(f"--algorithm: unknown keras-tuner algorithm {algorithm!r}: choose one of {', '.join(ALGORITHMS)}")
    if len(spec.objectives) > 1:
        raise CicyError(
            f"objectives: keras-tuner searches single-objective studies, this one has {len(spec.objectives)} "
            "(use study run for a Pareto front)"
        )
    if spec.enqueue:
        raise CicyError("enqueue: Optuna runs enqueued trials first; keras-tuner has no such queue (use study run, or remove enqueue)")
    pruner = spec.pruner["name"]
    if algorithm != "hyperband":
        return {}
    if "svm" in spec.families:
        raise CicyError("model.family svm: hyperband allocates training epochs, and an SVM trains none")
    if any(p.name == "train.epochs" for p in spec.params):
        raise CicyError("space.train.epochs: hyperband chooses each trial's epochs; remove it from the space")
    example = spec.config_for(spec.sample(space.Example()), seed=0)
    if example["train"]["ensemble"] > 1 or any(p.name == "train.ensemble" for p in spec.params):
        raise CicyError("train.ensemble: hyperband continues one model from round to round; train ensembles with another algorithm")
    settings = {"max_epochs": example["train"]["epochs"], "factor": 3}
    if pruner == "hyperband":  # Optuna's Hyperband pruner: its settings are keras-tuner's
        for key, value in spec.pruner.items():
            if key in OPTUNA_HYPERBAND and value != OPTUNA_HYPERBAND[key]:
                raise CicyError(f"pruner.{key}: keras-tuner's hyperband needs {OPTUNA_HYPERBAND[key]}, got {value!r}")
        if isinstance(spec.pruner.get("max_resource"), int):
            settings["max_epochs"] = spec.pruner["max_resource"]
        settings["factor"] = spec.pruner.get("reduction_factor", 3)
    elif pruner != "none":
        raise CicyError(
            f"pruner: {pruner}: hyperband stops poor trials itself and cannot apply Optuna's pruner too; "
            "set pruner: none (or pruner: hyperband for its settings)"
        )
    return settings


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
    """The study's space declared to keras-tuner: ``build`` samples it; the tuner's ``run_trial`` trains."""

    def __init__(self, spec: StudySpec):
        super().__init__(name=spec.name)
        self.spec = spec

    def build(self, hp):
        return self.spec.sample(HpTrial(hp))


class SearchStopped(Exception):
    """Raised before a new trial once ``should_stop`` says so (a timeout, an epoch budget)."""


@dataclass
class TrialEnd:
    number: int
    state: str  # complete, pruned or failed
    value: float | None
    run_id: str | None
    reason: str = ""


class TrialRunner:
    """Mixed into keras-tuner's tuners: every trial is trained by ``objective.train`` (``runner.run_tracked``)."""

    objective: Objective
    algorithm: str
    pruning = None  # an Optuna study with the study's pruner, for random and bayesian search
    last_failure = ""
    should_stop: Callable[[], bool] = staticmethod(lambda: False)
    on_trial: Callable[[TrialEnd], None] | None = None
    interrupts: signals.Interrupts | None = None

    def pre_create_trial(self):
        if self.should_stop():
            raise SearchStopped()

    def run_trial(self, trial, *args, **kwargs):
        spec = self.objective.spec
        hp, number = trial.hyperparameters, int(trial.trial_id)
        tags = {"engine": "keras-tuner", "algorithm": self.algorithm}
        fit_options: dict = {}
        run_id: list[str] = []
        pruning = None
        try:
            values = spec.sample(HpTrial(hp))
            if "tuner/epochs" in hp.values:  # hyperband: train to tuner/epochs, continuing tuner/trial_id's weights
                values["train.epochs"] = hp.values["tuner/epochs"]
                fit_options["initial_epoch"] = hp.values["tuner/initial_epoch"]
                tags.update({"tuner.bracket": hp.values["tuner/bracket"], "tuner.round": hp.values["tuner/round"]})
                if "tuner/trial_id" in hp.values:
                    fit_options["initial_weights"] = checkpoint_path(self, hp.values["tuner/trial_id"])
                    tags["tuner.continues"] = str(int(hp.values["tuner/trial_id"]))
            config = spec.config_for(values, seed=trial_seed(spec.seed, number), name=f"{spec.name}-kt-{number}")
            pruning = self.pruning.ask() if self.pruning is not None else None
            if pruning is not None:
                from optuna_integration import KerasPruningCallback

                fit_options["callbacks"] = [KerasPruningCallback(pruning, spec.monitor())]
            with self.interrupts.passed() if self.interrupts is not None else contextlib.nullcontext():
                tracked = self.objective.train(
                    config, number=number, tags=tags, on_start=run_id.append, **fit_options,
                    log_model=lambda r: self._best_so_far(objective_values(spec, r)[0], number),
                )
            if self.algorithm == "hyperband":  # a later round may continue it
                tracked.result.model.save_weights(checkpoint_path(self, trial.trial_id))
            value = objective_values(spec, tracked.result)[0]
            if not math.isfinite(value):
                raise CicyError(f"objective is not finite: {value}")
        except optuna.TrialPruned:
            # keras-tuner's oracle learns from the last value the pruner saw (as TPE uses pruned trials); the
            # "pruned" metric keeps the trial out of the best ones.
            seen = next(t for t in self.pruning.get_trials(deepcopy=False) if t.number == pruning.number).intermediate_values
            last = seen[max(seen)] if seen else math.nan
            self.pruning.tell(pruning, state=optuna.trial.TrialState.PRUNED)
            self._ended(TrialEnd(number, "pruned", None, run_id[0] if run_id else None))
            return {spec.objectives[0].metric: last, "pruned": 1.0}
        except Exception as exc:
            if pruning is not None:
                self.pruning.tell(pruning, state=optuna.trial.TrialState.FAIL)
            reason = self.last_failure = one_line(exc)
            self._ended(TrialEnd(number, "failed", None, run_id[0] if run_id else None, reason))
            raise keras_tuner.errors.FailedTrialError(reason) from exc
        if pruning is not None:
            self.pruning.tell(pruning, value)
        self._ended(TrialEnd(number, "complete", value, tracked.run_id))
        return {spec.objectives[0].metric: value}

    def _ended(self, end: TrialEnd) -> None:
        if self.on_trial is not None:
            self.on_trial(end)

    def _best_so_far(self, value: float, number: int) -> bool:
        """No earlier complete trial has a better or equal score (the model of such a trial is logged)."""
        sign = 1 if self.oracle.objective.direction == "max" else -1
        done = [t.score for t in complete(self.oracle) if int(t.trial_id) < number]
        return all(sign * value > sign * s for s in done)


def complete(oracle) -> list:
    """keras-tuner's completed trials that were not pruned."""
    return [
        t for t in oracle.trials.values()
        if t.status == "COMPLETED" and t.score is not None and not t.metrics.exists("pruned")
    ]


TUNERS = {"random": keras_tuner.RandomSearch, "bayesian": keras_tuner.BayesianOptimization, "hyperband": keras_tuner.Hyperband}


def build_tuner(
    spec: StudySpec, algorithm: str, objective: Objective, *, directory: str | Path, project_name: str,
    max_trials: int | None, overwrite: bool = False, settings: dict | None = None,
) -> keras_tuner.Tuner:
    """A keras-tuner tuner of ``algorithm`` whose trials ``objective`` trains (``max_trials`` None: until stopped).

    Bayesian optimisation starts from as many random trials as the study's sampler (``n_startup_trials``) when
    it says, else from keras-tuner's default; Hyperband runs brackets until ``max_trials`` or ``should_stop``.
    """
    settings = dict(check(spec, algorithm) if settings is None else settings)
    o = spec.objectives[0]
    kwargs: dict = dict(
        objective=keras_tuner.Objective(o.metric, "max" if o.direction == "maximize" else "min"),
        seed=trial_seed(spec.seed, 0),
        directory=str(directory),
        project_name=project_name,
        overwrite=overwrite,
        max_consecutive_failed_trials=FAILURES_IN_A_ROW,
    )
    if algorithm == "hyperband":
        kwargs.update(settings, hyperband_iterations=None)  # None: until stopped (the oracle's "inf")
    else:
        kwargs["max_trials"] = max_trials
        if algorithm == "bayesian" and isinstance(spec.sampler.get("n_startup_trials"), int):
            kwargs["num_initial_points"] = spec.sampler["n_startup_trials"]
    cls = type(f"Cicy{TUNERS[algorithm].__name__}", (TrialRunner, TUNERS[algorithm]), {})
    tuner = cls(CicyHyperModel(spec), **kwargs)
    tuner.oracle.max_trials = max_trials  # also hyperband's (not part of the saved state: this call's value holds)
    tuner.objective, tuner.algorithm = objective, algorithm
    if algorithm != "hyperband" and spec.pruner["name"] != "none" and spec.monitor():
        # The pruner's record of earlier trials lives beside keras-tuner's state, so a resumed search keeps it.
        tuner.pruning = optuna.create_study(
            study_name=spec.name, storage=f"sqlite:///{Path(tuner.project_dir) / 'pruner.db'}", load_if_exists=True,
            sampler=optuna.samplers.RandomSampler(seed=0), pruner=spec.pruner_object(), direction=spec.directions[0],
        )
    return tuner


def search(tuner: keras_tuner.Tuner) -> str:
    """Run the search; returns how it ended: ``done``, or ``stopped`` (``should_stop``). Failures are one line."""
    from ..compat import keras_tuner_quiet

    try:
        with keras_tuner_quiet():  # no traceback printed per failed trial: its reason is logged
            tuner.search(verbose=0)
    except SearchStopped:
        return "stopped"
    except RuntimeError as e:  # keras-tuner gives up after max_consecutive_failed_trials failures in a row
        if "consecutive failures" not in str(e):
            raise
        raise CicyError(f"keras-tuner stopped: the last {FAILURES_IN_A_ROW} trials failed ({tuner.last_failure})") from None
    return "done"


@dataclass
class TuneSummary:
    tuner: keras_tuner.Tuner
    best_value: float
    parent_run_id: str
    n_trials: int
    new_trials: int
    metric: str = "val_accuracy"

    @property
    def best_val_accuracy(self) -> float:
        return self.best_value


def _study_hash(spec: StudySpec) -> str:
    return hashlib.sha256(json.dumps(spec.raw, sort_keys=True).encode()).hexdigest()[:16]


def tune(
    spec: StudySpec, *, max_trials: int | None = None, algorithm: str = "random", tracking_uri: str | None = None,
    directory: str | None = None, overwrite: bool = False, console=None,
) -> TuneSummary:
    """Search the study's space with keras-tuner up to ``max_trials`` trials in all (default: the file's budget).

    Resumes the search in ``DIRECTORY/STUDY-ALGORITHM`` when one is there (``overwrite``: start afresh); the
    study's ``budget.timeout`` stops it from starting trials after that many seconds of this call.
    """
    settings = check(spec, algorithm)
    check_budget(max_trials, n_trials_name="--max-trials")
    client = tracking.client(tracking_uri)
    folder = Path(directory) if directory else tracking.local_home() / "keras-tuner"
    project = f"{spec.name}-{algorithm}"
    link_file = folder / project / "mlflow.json"
    link = json.loads(link_file.read_text()) if link_file.is_file() and not overwrite else None
    if link is not None and link.get("study_hash") != _study_hash(spec):
        raise CicyError(f"{folder / project} holds a keras-tuner search of another version of study {spec.name!r}: use --overwrite or another --directory")
    experiment = f"{spec.name}-keras-tuner"
    budget = max_trials or spec.n_trials
    objective = Objective(spec, mlflow_client=client, parent_run_id=None, uploader=tracking.uploader(), experiment=experiment)
    try:  # before any MLflow run is touched
        tuner = build_tuner(spec, algorithm, objective, directory=folder, project_name=project, max_trials=budget, overwrite=overwrite, settings=settings)
    except (RuntimeError, ValueError, KeyError, OSError) as e:  # keras-tuner could not reload what is there
        raise CicyError(f"{folder / project}: the keras-tuner search there cannot be resumed ({one_line(e)}): use --overwrite") from None
    if link is not None and link.get("tracking_uri") == client.tracking_uri:
        parent = tracking.Run(client, link["parent_run_id"])
        client.update_run(parent.run_id, status="RUNNING")
    else:
        parent = tracking.Run.start(
            client, experiment, run_name=f"{spec.name} ({algorithm})",
            tags={"study": spec.name, "engine": "keras-tuner", "algorithm": algorithm, "role": "study"},
        )
        parent.log_params({"study": spec.name, "algorithm": algorithm, "space": ",".join(p.label for p in spec.params),
                           "objective": f"{spec.objectives[0].metric}:{spec.objectives[0].direction}", **settings})
        parent.log_artifacts({"study.yaml": dump_yaml(spec.raw)})
    objective.parent_run_id = parent.run_id
    status, before = "FAILED", len(tuner.oracle.trials)
    try:
        link_file.parent.mkdir(parents=True, exist_ok=True)
        link_file.write_text(json.dumps({"parent_run_id": parent.run_id, "tracking_uri": client.tracking_uri, "study_hash": _study_hash(spec)}))
        start = time.monotonic()
        tuner.should_stop = lambda: spec.timeout is not None and time.monotonic() - start >= spec.timeout
        tuner.on_trial = _printer(console, spec, budget)
        tuner.interrupts = signals.Interrupts()
        with tuner.interrupts.held():
            status = "FINISHED" if search(tuner) == "done" else "KILLED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        for line in objective.uploader.flush():
            if console is not None:
                console.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)
        trials = list(tuner.oracle.trials.values())
        scores = [t.score for t in complete(tuner.oracle)]
        metric, direction = spec.objectives[0].metric, spec.objectives[0].direction
        best = (max if direction == "maximize" else min)(scores) if scores else math.nan
        parent.log_metrics({"n_trials": len(trials), **({f"best_{metric}": best} if scores else {})}, step=len(trials))
        parent.end(status, tags={"budget": budget})
    return TuneSummary(tuner, best, parent.run_id, len(trials), len(trials) - before, metric)


def _printer(console, spec: StudySpec, budget: int) -> Callable[[TrialEnd], None]:
    metric = spec.objectives[0].metric

    def report(end: TrialEnd) -> None:
        if console is not None:
            value = f"{metric}={end.value:.4g}" if end.value is not None else end.reason
            console.print(f"trial {end.number:>4} {end.state:<8} {value} [{end.number + 1}/{budget}]", markup=False, highlight=False)

    return report
