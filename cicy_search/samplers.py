"""TPE with a bounded history: the sampler models only the most recent finished trials.

TPE's time per suggestion grows with every finished trial of the study (``bench.scale``: multivariate TPE
took about 0.2 s a suggestion at 10,000 trials, 5 parameters), and Optuna has no setting that bounds it.
A study file's ``sampler: {name: tpe, n_recent_trials: N}`` keeps the cost flat: the sampler sees the
last ``N`` finished (complete or pruned) trials by number, plus the running ones (``constant_liar``).
Everything else (pruners, ``best_trial``, reports) still sees the whole study.
"""

from __future__ import annotations

from optuna.samplers import TPESampler


class RecentTrials:
    """A study as a sampler should see it: its trials cut to the last ``n`` finished ones (and the unfinished).

    Everything else is the study's own (storage, directions, ids), so it can stand in for the study in
    any sampler method.
    """

    def __init__(self, study, n: int):
        self._study, self._n = study, n

    def __getattr__(self, name: str):
        return getattr(self._study, name)

    def _cut(self, trials: list) -> list:
        finished = [t.number for t in trials if t.state.is_finished()]
        if len(finished) <= self._n:
            return trials
        first = finished[-self._n]
        return [t for t in trials if t.number >= first or not t.state.is_finished()]

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
