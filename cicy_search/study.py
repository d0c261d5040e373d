"""Running studies: create or resume an Optuna study from a study file and optimize it to its budget.

The study's MLflow side: one experiment named after the study, one parent run (its id in the study's
user attributes, so any worker can nest under it) and one child run per trial.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import optuna

from . import tracking
from .errors import CicyError
from .objective import Objective
from .storage import default_url, open_storage, redact
from .studyfile import StudySpec

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def create(spec: StudySpec, *, storage: str | None = None, tracking_uri: str | None = None) -> optuna.Study:
    """Create the study and its MLflow parent run, or load them if they exist (idempotent)."""
    client = tracking.client(tracking_uri)
    optuna_storage = open_storage(storage)
    study = optuna.create_study(
        study_name=spec.name,
        storage=optuna_storage,
        sampler=spec.sampler_object(),
        pruner=spec.pruner_object(),
        directions=spec.directions,
        load_if_exists=True,
    )
    if [d.name.lower() for d in study.directions] != spec.directions:
        raise CicyError(
            f"study {spec.name!r} exists in {redact(storage or default_url())} with directions "
            f"{[d.name.lower() for d in study.directions]}, not {spec.directions}"
        )
    if "mlflow_parent_run_id" not in study.user_attrs:
        parent = tracking.Run.start(client, spec.name, run_name=spec.name, tags={"study": spec.name, "role": "study"})
        parent.log_params(
            {
                "study": spec.name,
                "objectives": ",".join(f"{o.metric}:{o.direction}" for o in spec.objectives),
                **{f"sampler.{k}": v for k, v in spec.sampler.items()},
                **{f"pruner.{k}": v for k, v in spec.pruner.items()},
                "budget.n_trials": spec.n_trials,
                "space": ",".join(p.name for p in spec.params),
            }
        )
        parent.log_artifacts({"study.yaml": tracking.config_yaml(spec.raw)})
        parent.end("FINISHED")
        study.set_user_attr("mlflow_parent_run_id", parent.run_id)
        study.set_user_attr("mlflow_experiment", spec.name)
        study.set_user_attr("tracking_uri", client.tracking_uri)
        study.set_user_attr("objectives", [o.metric for o in spec.objectives])
        study.set_user_attr("spec", spec.raw)
    return study


def load(name: str, *, storage: str | None = None) -> optuna.Study:
    """An existing study by name; a clear error names the studies that do exist."""
    optuna_storage = open_storage(storage)
    names = [s.study_name for s in optuna.get_all_study_summaries(optuna_storage, include_best_trial=False)]
    if name not in names:
        known = ", ".join(names) if names else "none"
        raise CicyError(f"no study {name!r} in {redact(storage or default_url())} (studies there: {known})")
    return optuna.load_study(study_name=name, storage=optuna_storage)


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


@dataclass
class RunSummary:
    study: optuna.Study
    new_trials: int
    finished: int
    budget: int
    seconds: float


def _reporter(console, spec: StudySpec, budget: int):
    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if console is None:
            return
        state = trial.state.name.lower()
        value = "" if trial.values is None else " ".join(f"{o.metric}={v:.4g}" for o, v in zip(spec.objectives, trial.values))
        reason = trial.user_attrs.get("fail_reason", "") if state == "fail" else ""
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        console.print(
            f"trial {trial.number:>4} {state:<8} {value} {reason} [{count_finished(study)}/{budget}] {seconds:.1f} s",
            highlight=False,
        )

    return report


def run(
    spec: StudySpec,
    *,
    storage: str | None = None,
    tracking_uri: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    worker: int = 0,
    console=None,
) -> RunSummary:
    """Optimize until the study holds ``n_trials`` finished (complete or pruned) trials, or time runs out.

    Earlier trials in the same storage count toward the budget, so a rerun resumes. A trial that
    raises is recorded as failed (with ``fail_reason``) and the study goes on; failures do not count
    toward the budget, but more failures than the budget in one call stop it.
    """
    budget = n_trials or spec.n_trials
    timeout = timeout if timeout is not None else spec.timeout
    study = create(spec, storage=storage, tracking_uri=tracking_uri)
    client = tracking.client(tracking_uri or study.user_attrs.get("tracking_uri"))
    # A resumed study must not replay the sampler's first draws: shift its seed by the trials already there.
    sampler = dict(spec.sampler)
    if sampler.get("seed") is not None:
        sampler["seed"] = sampler["seed"] + len(study.trials) + worker * 100_003
    study.sampler = StudySpec.sampler_object(spec, sampler)
    objective = Objective(spec, mlflow_client=client, parent_run_id=study.user_attrs["mlflow_parent_run_id"])
    start = time.monotonic()
    before = len(study.trials)
    failures = 0
    while (remaining := budget - count_finished(study)) > 0 and failures <= budget:
        left = None if timeout is None else timeout - (time.monotonic() - start)
        if left is not None and left <= 0:
            break
        n_before = len(study.trials)
        study.optimize(
            objective,
            n_trials=remaining,
            timeout=left,
            catch=(Exception,),
            callbacks=[
                optuna.study.MaxTrialsCallback(budget, states=FINISHED),
                _reporter(console, spec, budget),
            ],
            gc_after_trial=True,
        )
        new = study.get_trials(deepcopy=False)[n_before:]
        failures += sum(t.state == optuna.trial.TrialState.FAIL for t in new)
        if not new:
            break
    return RunSummary(study, len(study.trials) - before, count_finished(study), budget, time.monotonic() - start)


def trials_table(study: optuna.Study) -> list[dict]:
    """One row a trial: number, state, value(s), params, duration, MLflow run id."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "values": t.values,
                "params": t.params,
                "seconds": t.duration.total_seconds() if t.duration else None,
                "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
                "fail_reason": t.user_attrs.get("fail_reason"),
            }
        )
    return rows


def best_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The best trial, or the Pareto front of a multi-objective study."""
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        raise CicyError(f"study {study.study_name!r} has no complete trial yet")
    return study.best_trials if len(study.directions) > 1 else [study.best_trial]
