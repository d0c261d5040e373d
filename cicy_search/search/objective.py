"""The objective: one Optuna trial = sample the space, train the config, track it in MLflow.

Each side links to the other: the trial keeps ``mlflow_run_id`` (and its full ``config`` and
``seed``) in its user attributes; the run carries the study name and trial number as tags.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import optuna

from .. import compat, tracking
from .studyfile import StudySpec
from ..tracking import links
from ..tracking.summary import dominates
from ..errors import one_line

if TYPE_CHECKING:
    from ..training import Prepared, TrainResult


GC_EVERY = 10


def trial_seed(study_seed: int, trial_number: int) -> int:
    """A per-trial training seed derived from the study seed and the trial number (logged with the run)."""
    return (study_seed * 1_000_003 + trial_number * 7919 + 1) % (2**31 - 1)


def objective_values(spec: StudySpec, result: TrainResult) -> list[float]:
    metrics = {**result.metrics, "n_params": float(result.n_params), "train_seconds": result.seconds}
    if "val_loss" in result.history:
        losses = result.history["val_loss"]
        metrics["val_loss"] = min(losses) if result.config["train"]["early_stopping"] else losses[-1]
    return [float(metrics[o.metric]) for o in spec.objectives]


def is_best_so_far(study: optuna.Study, values: list[float], directions: list[str], number: int | None = None) -> bool:
    """True when no other complete trial beats ``values`` (single objective) or dominates them (several).

    ``number`` is the trial's own: it may already be complete (the check runs in the uploader's thread),
    and of equal values only the earliest trial counts as best (as ``study.best_trial`` does).
    """
    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if t.number != number]
    return not any(
        dominates(t.values, values, directions)
        or (len(values) == 1 and t.values == values and (number is None or t.number < number))
        for t in done
    )


class Objective:
    """Callable for ``study.optimize``; data arrays are prepared once and reused across trials."""

    def __init__(
        self, spec: StudySpec, *, mlflow_client, parent_run_id: str | None, tags: dict | None = None, uploader=None,
        experiment: str | None = None, callbacks=(), spool=None,
    ):
        self.spec = spec
        self.client = mlflow_client
        self.parent_run_id = parent_run_id
        self.tags = dict(tags or {})  # e.g. a worker's gpu and threads
        self.uploader = uploader  # tracking.Uploader: MLflow writes off the training thread
        self.spool = spool  # tracking.spool.Spool: where trial runs' writes wait while the tracking server is away
        self.experiment = experiment or spec.name
        self.callbacks = list(callbacks)  # Keras callbacks for every trial, before pruning (an epoch budget)
        self._prepared: dict[str, Prepared] = {}

    def prepared(self, config: dict) -> Prepared:
        key = json.dumps(config["data"], sort_keys=True)
        if key not in self._prepared:
            from ..training import prepare

            self._prepared[key] = prepared = prepare(config)
            if self.parent_run_id:  # the study's run lists every split its trials trained on
                d = config["data"]
                parent = tracking.Run(self.client, self.parent_run_id, uploader=self.uploader)
                parent.log_inputs(tracking.dataset_inputs(d, prepared.dataset.hash, prepared.index))
        return self._prepared[key]

    def __call__(self, trial: optuna.Trial) -> Any:
        spec = self.spec
        seed = trial_seed(spec.seed, trial.number)
        try:
            values = spec.sample(trial)
            config = spec.config_for(values, seed=seed, name=f"{spec.name}-{trial.number}")
        except Exception as exc:  # recorded like a training failure, so a study failing every trial says why
            trial.set_user_attr("fail_reason", one_line(exc))
            raise
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("config", config)
        callbacks = []
        monitor = spec.monitor(config["model"]["family"])
        if monitor and spec.pruner["name"] != "none":
            from optuna_integration import KerasPruningCallback

            callbacks.append(KerasPruningCallback(trial, monitor))
        tags = {"sampler": spec.sampler["name"], "pruner": spec.pruner["name"]}
        if "retry_of" in trial.user_attrs:  # re-run of a trial whose worker was lost
            tags["retry_of"] = str(trial.user_attrs["retry_of"])
        try:
            tracked = self.train(
                config,
                number=trial.number,
                tags=tags,
                callbacks=callbacks,
                log_model=lambda r: is_best_so_far(trial.study, objective_values(spec, r), spec.directions, trial.number),
                on_start=lambda run_id: run_id and trial.set_user_attr(links.RUN_ID, run_id),  # None: spooled
            )
        except optuna.TrialPruned:
            raise
        except BaseException as exc:
            reason = one_line(exc)
            trial.set_user_attr("fail_reason", reason)
            raise
        result = objective_values(spec, tracked.result)
        if not all(math.isfinite(v) for v in result):
            trial.set_user_attr("fail_reason", f"objective is not finite: {result}")
        return result[0] if len(result) == 1 else result

    def train(self, config: dict, *, number: int, tags: dict, callbacks=(), log_model=True, on_start=None, **fit_options):
        """Train one trial's config as the MLflow run ``trial-NUMBER`` under the study's run: every engine's trials.

        ``tags`` come on top of the study name, trial number and this objective's own; ``fit_options`` go to
        ``run_tracked`` (a Hyperband trial's ``initial_weights`` and ``initial_epoch``).
        """
        from ..tracking.runner import run_tracked
        from ..training import EpochCallback

        callbacks = [*self.callbacks, *callbacks]
        if self.uploader is not None:
            # The previous trial's run is closed (and the study's run updated) in the background while this one
            # starts; by the end of this trial's first epoch that is done (waiting costs nothing then), so a
            # worker killed later leaves no finished trial with a RUNNING run or missing from the summary.
            settled = self.uploader.submit(lambda: None)
            callbacks.insert(0, EpochCallback(lambda epoch, logs: settled.result()))  # done after the first: free
        try:
            return run_tracked(
                config,
                mlflow_client=self.client,
                experiment=self.experiment,
                run_name=f"trial-{number}",
                parent_run_id=self.parent_run_id,
                tags={"study": self.spec.name, "trial": str(number), **tags, **self.tags},
                params={"trial.number": number},
                prepared=self.prepared(config),
                callbacks=callbacks,
                log_model=log_model,
                log_test=False,  # the test split is scored once, by export, for the chosen model
                on_start=on_start,
                uploader=self.uploader,
                spool=self.spool,
                trial=number,
                **fit_options,
            )
        finally:
            # Keras's global state is reset every trial; the full garbage collection that frees the old
            # graphs is slow (docs/performance.md), so it runs every GC_EVERY trials, and so does the clearing of
            # TensorFlow's instantiated functions: a dense trial's shared traced epoch (training.SharedDenseLoop)
            # would be optimised again after each.
            last = number % GC_EVERY == GC_EVERY - 1
            compat.reset_keras(free_memory=last, clear_caches=last)
