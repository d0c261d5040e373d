"""How much of a study its sampler and pruner read: bounded TPE history, cached reads for the pruner.

TPE's time per suggestion grows with every finished trial of the study (``bench.scale``: multivariate TPE
took about 0.2 s a suggestion at 10,000 trials, 5 parameters), and Optuna has no setting that bounds it.
A study file's ``sampler: {name: tpe, n_recent_trials: N}`` keeps the cost flat: the sampler sees the
last ``N`` finished (complete or pruned) trials by number, plus the running ones after them (``constant_liar``).
Everything else (pruners, ``best_trial``, reports) still sees the whole study.

The median and percentile pruners read the study's complete trials at every ``should_prune`` (every
epoch); on a database each read also re-reads every running trial with all its attributes, a cost that
grows with the number of workers. ``CachedReads`` keeps that list for one trial for up to ``seconds``.
"""

from __future__ import annotations

import time

from optuna.pruners import BasePruner
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
    """``pruner`` reading the study's finished trials once per trial, again only after ``seconds``.

    Finished trials never change, so a cached list only lacks the trials finished since it was read: in one
    process none (the cache is per trial), with several workers those of the last ``seconds`` at most.
    Reads of unfinished trials go to the storage as before.
    """

    def __init__(self, pruner: BasePruner, seconds: float = PRUNER_READ_SECONDS):
        self.pruner, self.seconds = pruner, seconds
        self._key = None
        self._read_at = 0.0
        self._trials: dict = {}

    def prune(self, study, trial) -> bool:
        key = (study._study_id, trial.number)
        if key != self._key or time.monotonic() - self._read_at > self.seconds:
            self._key, self._read_at, self._trials = key, time.monotonic(), {}
        return self.pruner.prune(_Reads(study, self._trials), trial)


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
