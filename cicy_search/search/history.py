"""How much of a study its sampler and pruner read: bounded TPE history, cached reads for the pruner.

TPE's time per suggestion grows with every finished trial of the study (measured by ``bench.scale``:
docs/performance.md), and Optuna has no setting that bounds it.
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
from optuna.study import StudyDirection
from optuna.samplers import TPESampler
from optuna.trial import TrialState

from ..compat import StudyView, percentile_settings

FINISHED_STATES = {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL}
PRUNER_READ_SECONDS = 10.0


class RecentTrials(StudyView):
    """A study as a sampler should see it: its trials from the ``n``-th last finished one on (by number).

    Running trials older than that are left out too (with many workers, only a lost worker's trial can be).
    The cut walks back from the newest trial, so it costs ``n`` steps, not the study's size. Everything else
    is the study's own (storage, directions, ids), so it can stand in for the study in any sampler method.
    """

    def __init__(self, study, n: int):
        super().__init__(study)
        self._n = n

    def select(self, trials: list) -> list:
        seen = 0
        for i in range(len(trials) - 1, -1, -1):  # Optuna returns trials in order of number
            seen += trials[i].state.is_finished()
            if seen == self._n:
                return trials[i:]
        return trials


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


def best_intermediate_value(trial, direction: StudyDirection) -> float:
    """The trial's best reported value over its steps (NaN when it has none but NaN): what a percentile pruner
    compares."""
    values = np.asarray(list(trial.intermediate_values.values()), dtype=float)
    if values.size > 0 and np.isnan(values).all():
        return math.nan
    return float(np.nanmax(values) if direction == StudyDirection.MAXIMIZE else np.nanmin(values))


def first_in_interval(step: int, steps, n_warmup_steps: int, interval_steps: int) -> bool:
    """Whether ``step`` is the first of the trial's reported ``steps`` at or after its latest pruning step (every
    ``interval_steps`` after ``n_warmup_steps``): a percentile pruner decides only there."""
    latest = (step - n_warmup_steps) // interval_steps * interval_steps + n_warmup_steps
    return max([-1, *(s for s in steps if s != step)]) < latest


class CachedReads(BasePruner):
    """A percentile (or median) ``pruner`` reading the study's finished trials once per trial, again only after
    ``seconds``, and keeping each step's values over the complete trials as they come.

    Finished trials never change, so a cached list only lacks the trials finished since it was read: in one
    process none (the cache is per trial), with several workers those of the last ``seconds`` at most. Reads of
    unfinished trials go to the storage as before. Optuna's ``PercentilePruner`` also walks every complete trial
    at each step for that step's values (a cost that grows with the study, every epoch of every trial); here each
    complete trial's values are added once, and a step's percentile is computed again only when it has new ones.
    The rule is ``PercentilePruner.prune``'s, with the pruner's own settings (``tests/test_search_studyfile.py``
    checks the decisions against Optuna's).
    """

    def __init__(self, pruner: PercentilePruner, seconds: float = PRUNER_READ_SECONDS):
        self.pruner, self.seconds = pruner, seconds
        self.settings = percentile_settings(pruner)
        self._key = None
        self._read_at = 0.0
        self._cache: dict = {}
        self._study = None
        self._added: set[int] = set()  # the complete trials (numbers) whose values are in _steps
        self._steps: dict[int, list[float]] = {}  # step -> the complete trials' values at it
        self._percentiles: dict[int, tuple[int, float]] = {}  # step -> (values it was computed from, percentile)

    def prune(self, study, trial) -> bool:
        key = (study.study_name, trial.number)
        if key != self._key or time.monotonic() - self._read_at > self.seconds:
            self._key, self._read_at, self._cache = key, time.monotonic(), {}
        completed = _Reads(study, self._cache).get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        self._add(study.study_name, completed)
        p = self.settings
        if not completed or len(completed) < p.n_startup_trials:
            return False
        step = trial.last_step
        if step is None or step < p.n_warmup_steps:
            return False
        if not first_in_interval(step, trial.intermediate_values.keys(), p.n_warmup_steps, p.interval_steps):
            return False
        best = best_intermediate_value(trial, study.direction)
        if math.isnan(best):
            return True
        percentile = self._step_percentile(step, study.direction)
        if math.isnan(percentile):
            return False
        return best < percentile if study.direction == StudyDirection.MAXIMIZE else best > percentile

    def _add(self, study: str, completed: list) -> None:
        if study != self._study:
            self._study, self._added, self._steps, self._percentiles = study, set(), {}, {}
        if len(completed) == len(self._added):
            return  # complete trials are only ever added: the same count is the same trials
        for t in completed:
            if t.number not in self._added:
                self._added.add(t.number)
                for step, value in t.intermediate_values.items():
                    self._steps.setdefault(step, []).append(value)

    def _step_percentile(self, step: int, direction) -> float:
        """The percentile of the complete trials' values at ``step`` (NaN with fewer than ``n_min_trials``, or all NaN)."""
        values = np.array(self._steps.get(step, []), dtype=float)
        if step not in self._percentiles or self._percentiles[step][0] != len(values):
            if len(values) < self.settings.n_min_trials or np.isnan(values).all():
                result = math.nan
            else:
                q = 100 - self.settings.percentile if direction == StudyDirection.MAXIMIZE else self.settings.percentile
                result = float(np.nanpercentile(values, q))
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
