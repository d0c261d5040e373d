"""How much of a study its sampler and pruner read: bounded TPE history, cached reads for the pruner.

TPE's time per suggestion grows with every finished trial of the study (``bench.scale``: multivariate TPE
took about 0.2 s a suggestion at 10,000 trials, 5 parameters), and Optuna has no setting that bounds it.
A study file's ``sampler: {name: tpe, n_recent_trials: N}`` keeps the cost flat: the sampler sees the
last ``N`` finished (complete or pruned) trials by number, plus the running ones after them (``constant_liar``).
Everything else (pruners, ``best_trial``, reports) still sees the whole study.

The median and percentile pruners read the study's complete trials at every ``should_prune`` (every
epoch) and walk them all for the step's values; on a database each read also re-reads every running trial
with all its attributes, a cost that grows with the number of workers. ``CachedReads`` keeps that list for
one trial for up to ``seconds``, and the values of each step as complete trials come.
"""

from __future__ import annotations

import math
import time

import numpy as np
from optuna.pruners import BasePruner, PercentilePruner
from optuna.pruners._percentile import _get_best_intermediate_result_over_steps, _is_first_in_interval_step
from optuna.study import StudyDirection
from optuna.samplers import TPESampler
from optuna.trial import TrialState

FINISHED_STATES = {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL}
PRUNER_READ_SECONDS = 10.0


class RecentTrials:
    """A study as a sampler should see it: its trials from the ``n``-th last finished one on (by number).

    Running trials older than that are left out too (with many workers, only a lost worker's trial can be).
    The cut walks back from the newest trial, so it costs ``n`` steps, not the study's size. Everything else
    is the study's own (storage, directions, ids), so it can stand in for the study in any sampler method.
    """

    def __init__(self, study, n: int):
        self._study, self._n = study, n

    def __getattr__(self, name: str):
        return getattr(self._study, name)

    def _cut(self, trials: list) -> list:
        seen = 0
        for i in range(len(trials) - 1, -1, -1):  # Optuna returns trials in order of number
            seen += trials[i].state.is_finished()
            if seen == self._n:
                return trials[i:]
        return trials

    def _get_trials(self, deepcopy: bool = True, states=None, use_cache: bool = False) -> list:
        return self._cut(self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache))

    def get_trials(self, deepcopy: bool = True, states=None) -> list:
        return self._cut(self._study.get_trials(deepcopy=deepcopy, states=states))

    @property
    def trials(self) -> list:
        return self.get_trials()


class RecentTPESampler(TPESampler):
    """``TPESampler`` (same settings) whose model is built from the last ``n_recent_trials`` finished trials."""

    def __init__(self, *, n_recent_trials: int, **settings):
        super().__init__(**settings)
        self.n_recent_trials = n_recent_trials

    def infer_relative_search_space(self, study, trial):
        return super().infer_relative_search_space(RecentTrials(study, self.n_recent_trials), trial)

    def sample_relative(self, study, trial, search_space):
        return super().sample_relative(RecentTrials(study, self.n_recent_trials), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return super().sample_independent(RecentTrials(study, self.n_recent_trials), trial, param_name, param_distribution)


class CachedReads(BasePruner):
    """A percentile (or median) ``pruner`` reading the study's finished trials once per trial, again only after
    ``seconds``, and keeping each step's values over the complete trials as they come.

    Finished trials never change, so a cached list only lacks the trials finished since it was read: in one
    process none (the cache is per trial), with several workers those of the last ``seconds`` at most. Reads of
    unfinished trials go to the storage as before. Optuna's ``PercentilePruner`` also walks every complete trial
    at each step for that step's values (12 ms at 10,000 trials here, every epoch of every trial); here each
    complete trial's values are added once, and a step's percentile is computed again only when it has new ones.
    The decisions are Optuna's (``PercentilePruner.prune`` of Optuna 5, whose helpers it calls).
    """

    incremental = True  # the step values kept between trials (bench.scale turns it off for its before/after)

    def __init__(self, pruner: PercentilePruner, seconds: float = PRUNER_READ_SECONDS):
        self.pruner, self.seconds = pruner, seconds
        self._key = None
        self._read_at = 0.0
        self._trials: dict = {}
        self._study_id = None
        self._added: set[int] = set()  # the complete trials (ids) whose values are in _steps
        self._steps: dict[int, list[float]] = {}  # step -> the complete trials' values at it
        self._percentiles: dict[int, tuple[int, float]] = {}  # step -> (values it was computed from, percentile)

    def prune(self, study, trial) -> bool:
        key = (study._study_id, trial.number)
        if key != self._key or time.monotonic() - self._read_at > self.seconds:
            self._key, self._read_at, self._trials = key, time.monotonic(), {}
        reads = _Reads(study, self._trials)
        if not self.incremental:
            return self.pruner.prune(reads, trial)
        completed = reads.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        self._add(study._study_id, completed)
        p = self.pruner
        if not completed or len(completed) < p._n_startup_trials:
            return False
        step = trial.last_step
        if step is None or step < p._n_warmup_steps:
            return False
        if not _is_first_in_interval_step(step, trial.intermediate_values.keys(), p._n_warmup_steps, p._interval_steps):
            return False
        best = _get_best_intermediate_result_over_steps(trial, study.direction)
        if math.isnan(best):
            return True
        percentile = self._percentile(step, study.direction)
        if math.isnan(percentile):
            return False
        return best < percentile if study.direction == StudyDirection.MAXIMIZE else best > percentile

    def _add(self, study_id: int, completed: list) -> None:
        if study_id != self._study_id:
            self._study_id, self._added, self._steps, self._percentiles = study_id, set(), {}, {}
        if len(completed) == len(self._added):
            return  # complete trials are only ever added: the same count is the same trials
        for t in completed:
            if t._trial_id not in self._added:
                self._added.add(t._trial_id)
                for step, value in t.intermediate_values.items():
                    self._steps.setdefault(step, []).append(value)

    def _percentile(self, step: int, direction) -> float:
        """``_get_percentile_intermediate_result_over_trials`` from the kept values of ``step``."""
        values = self._steps.get(step, [])
        if step not in self._percentiles or self._percentiles[step][0] != len(values):
            if len(values) < self.pruner._n_min_trials:
                result = math.nan
            else:
                q = 100 - self.pruner._percentile if direction == StudyDirection.MAXIMIZE else self.pruner._percentile
                result = float(np.nanpercentile(np.array(values, dtype=float), q))
            self._percentiles[step] = (len(values), result)
        return self._percentiles[step][1]


class _Reads:
    """A study whose ``get_trials`` of finished states only is answered from ``cache`` after the first read."""

    def __init__(self, study, cache: dict):
        self._study, self._cache = study, cache

    def __getattr__(self, name: str):
        return getattr(self._study, name)

    def get_trials(self, deepcopy: bool = True, states=None) -> list:
        if deepcopy or states is None or not set(states) <= FINISHED_STATES:
            return self._study.get_trials(deepcopy=deepcopy, states=states)
        key = tuple(sorted(s.value for s in states))
        if key not in self._cache:
            self._cache[key] = self._study.get_trials(deepcopy=False, states=states)
        return self._cache[key]
