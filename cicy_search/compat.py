"""The one module that reaches into private names of Optuna, typer (its bundled click), Keras, keras-tuner and TensorFlow.

Everything else in the package and in ``bench/`` uses their public APIs (``tests/test_layout.py`` refuses a private
import or attribute of theirs anywhere but here). Each name below is here because nothing public does the job, and
``tests/test_compat.py`` has one contract test per name that fails naming it and the version the project pins
(pyproject.toml) when a release changes it. Libraries are imported inside the functions: this module sits at the
top layer, and importing it costs nothing.

Why each is needed:

- ``optuna.storages._heartbeat.BaseHeartbeat`` and its hook ``_get_stale_trial_ids``: Optuna 5 gives its heartbeat
  (fail a dead worker's trial, retry it) to RDB storages only; a journal file gets the same machinery by implementing
  this base class (``search.storage``'s ``HeartbeatJournalStorage``). ``is_heartbeat_enabled`` is Optuna's own test.
- ``JournalStorage._thread_lock``, ``_sync_with_backend`` and ``_replay_result`` (its ``_studies``,
  ``_study_id_to_trial_ids``, ``_trials``): the journal storage's replayed trials, read in place so that a study of
  10,000 trials is not walked (and copied) at every ``get_all_trials`` (``search.storage.FinishedIndex``).
- ``Study._storage`` and ``_CachedStorage._backend``, ``optuna.storages._rdb.models``: trials per state in one
  ``GROUP BY`` on a database (``search.storage.count_states``), where ``study.get_trials`` re-reads every running
  trial with all its attributes at every budget check of every worker.
- ``Study._get_trials``: what Optuna's samplers read a study's trials through; ``search.history.RecentTrials``
  answers it with the recent trials only (TPE has no setting that bounds its history).
- ``PercentilePruner``'s settings (``_percentile``, ``_n_startup_trials``, ``_n_warmup_steps``, ``_interval_steps``,
  ``_n_min_trials``): ``search.history.CachedReads`` takes the pruner a study file builds and applies its rule with
  cached reads.
- the logger ``optuna.study._optimize``: where Optuna logs each failed trial's traceback (the CLI filters them).
- ``typer._click.exceptions``: typer 0.29 raises its bundled click's usage errors, which click's own classes miss.
- ``KerasTensor._keras_history``: the layer that made a tensor (``tracking.runner.model_summary``'s "Inputs").
- ``keras.src.backend.common.global_state`` (``GLOBAL_RANDOM_SEED``, ``GLOBAL_SEED_GENERATOR``): what
  ``keras.utils.set_random_seed`` does but ``tf.random.set_seed``, which clears TensorFlow's caches of instantiated
  functions: a dense trial's shared traced epoch (``training.SharedDenseLoop``) would be optimised again every trial.
- ``keras.src.backend.common.global_state``'s ``GLOBAL_STATE_TRACKER`` and ``GLOBAL_SETTINGS_TRACKER``:
  ``keras.backend.clear_session`` without its ``clear_kernel_cache``, which makes TensorFlow instantiate (and
  optimise) every function again, the shared traced epoch too (``reset_keras``, between a study's trials).
- ``keras_tuner.src.config.DEBUG``: keras-tuner prints a traceback per failed trial unless it is off.
- ``Tuner._get_checkpoint_fname``: where keras-tuner keeps a trial's weights (a Hyperband round continues them).
- ``tensorflow.python...convert_variables_to_constants_v2``: the frozen graph TensorFlow's profiler counts FLOP on
  (``bench.flops``).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

# Where Optuna logs "Trial N failed ..." with its traceback.
OPTUNA_TRIAL_LOGGER = "optuna.study._optimize"


# --- Optuna: heartbeat ------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def heartbeat_base() -> type:
    """A base class for a storage with Optuna's heartbeat: Optuna's ``BaseHeartbeat`` with its private hook
    ``_get_stale_trial_ids`` answered by a public-named method, ``stale_trial_ids(study_id)``."""
    from optuna.storages._heartbeat import BaseHeartbeat

    class Heartbeat(BaseHeartbeat):
        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            return self.stale_trial_ids(study_id)

        def stale_trial_ids(self, study_id: int) -> list[int]:  # pragma: no cover - abstract
            raise NotImplementedError

    return Heartbeat


def heartbeat_enabled(storage) -> bool:
    """Whether Optuna's heartbeat runs for a storage (an RDB or ``HeartbeatJournalStorage`` one with an interval)."""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(storage)


# --- Optuna: the storage behind a study ---------------------------------------------------------------------------


def study_storage(study):
    """The storage ``study`` reads and writes (an RDB storage comes inside Optuna's cache)."""
    return study._storage


def rdb_count_states(study) -> dict | None:
    """Trials per state (``{TrialState: n}``) of ``study`` in one ``GROUP BY`` statement; None when its storage is no
    database."""
    import optuna
    import sqlalchemy
    from optuna.storages._rdb import models

    storage = study_storage(study)
    backend = getattr(storage, "_backend", storage)  # an RDB storage comes inside Optuna's cache
    if not isinstance(backend, optuna.storages.RDBStorage):
        return None
    query = (
        sqlalchemy.select(models.TrialModel.state, sqlalchemy.func.count())
        .join(models.StudyModel, models.TrialModel.study_id == models.StudyModel.study_id)
        .where(models.StudyModel.study_name == study.study_name)
        .group_by(models.TrialModel.state)
    )
    with backend.engine.connect() as conn:
        return dict(conn.execute(query).all())


# --- Optuna: the journal storage's replayed log -------------------------------------------------------------------


@dataclass
class Replay:
    """A journal storage's trials as its log replays them: ``studies`` (the study ids), ``trial_ids`` (a study's trial
    ids by number) and ``trials`` (trial id -> FrozenTrial, the storage's own objects: never change them)."""

    studies: dict
    trial_ids: dict
    trials: dict


@contextlib.contextmanager
def journal_replay(storage):
    """The journal storage's replayed log, brought up to the file's end, under the storage's lock (which Optuna's own
    reads and writes take too: keep the block short and call none of them inside it)."""
    with storage._thread_lock:
        storage._sync_with_backend()
        r = storage._replay_result
        yield Replay(r._studies, r._study_id_to_trial_ids, r._trials)


# --- Optuna: a study as its sampler reads it ----------------------------------------------------------------------


class StudyView:
    """Stands in for ``study`` in a sampler's methods, every read of its trials going through ``select(trials)``.

    Optuna's samplers read trials through ``Study._get_trials`` (with its per-optimize cache), others through
    ``get_trials``; both are answered here. Everything else is the study's own.
    """

    def __init__(self, study):
        self._study = study

    def __getattr__(self, name: str):
        return getattr(self._study, name)

    def select(self, trials: list) -> list:
        return trials

    def _get_trials(self, deepcopy: bool = True, states=None, use_cache: bool = False) -> list:
        return self.select(self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache))

    def get_trials(self, deepcopy: bool = True, states=None) -> list:
        return self.select(self._study.get_trials(deepcopy=deepcopy, states=states))

    @property
    def trials(self) -> list:
        return self.get_trials()


# --- Optuna: a percentile pruner's settings -----------------------------------------------------------------------


@dataclass(frozen=True)
class PercentileSettings:
    percentile: float
    n_startup_trials: int
    n_warmup_steps: int
    interval_steps: int
    n_min_trials: int


def percentile_settings(pruner) -> PercentileSettings:
    """The settings of an ``optuna.pruners.PercentilePruner`` (or ``MedianPruner``), which it keeps private."""
    return PercentileSettings(
        pruner._percentile, pruner._n_startup_trials, pruner._n_warmup_steps, pruner._interval_steps, pruner._n_min_trials
    )


# --- typer --------------------------------------------------------------------------------------------------------


def click_exceptions():
    """typer's bundled click exceptions module (``ClickException``, ``NoArgsIsHelpError``, ``Abort``)."""
    from typer._click import exceptions

    return exceptions


# --- Keras and keras-tuner ----------------------------------------------------------------------------------------


def source_layer(tensor) -> str | None:
    """The name of the layer whose output ``tensor`` (a KerasTensor) is; None for a tensor of no layer."""
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else history.operation.name


def seed_keras(seed: int) -> None:
    """``keras.utils.set_random_seed(seed)`` without its ``tf.random.set_seed``: Python's, NumPy's and Keras's seeds
    (Keras's initialisers and dropout layers draw theirs from Python's ``random``; the global seed generator of
    ``keras.random`` is made anew from ``seed``)."""
    import random

    import numpy as np
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils

    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)


def reset_keras(*, free_memory: bool, clear_caches: bool) -> None:
    """``keras.backend.clear_session(free_memory)``; with ``clear_caches`` off, TensorFlow's kernel caches (its
    instantiated functions) are kept: Keras's global state (layer names, settings) and the default graph are reset."""
    import gc
    import threading

    import keras

    if clear_caches:
        keras.backend.clear_session(free_memory=free_memory)
        return
    import tensorflow as tf
    from keras.src.backend.common import global_state

    global_state.GLOBAL_STATE_TRACKER = threading.local()
    global_state.GLOBAL_SETTINGS_TRACKER = threading.local()
    tf.compat.v1.reset_default_graph()
    if free_memory:
        gc.collect()


@contextlib.contextmanager
def keras_tuner_quiet():
    """keras-tuner without its traceback per failed trial (``keras_tuner.src.config.DEBUG`` off meanwhile)."""
    from keras_tuner.src import config

    debug, config.DEBUG = config.DEBUG, False
    try:
        yield
    finally:
        config.DEBUG = debug


def checkpoint_path(tuner, trial_id) -> str:
    """The file keras-tuner keeps ``trial_id``'s weights in (``tuner.get_best_models`` reads them from there)."""
    return tuner._get_checkpoint_fname(trial_id)


# --- TensorFlow ---------------------------------------------------------------------------------------------------


def frozen_graph(concrete_function):
    """The graph of a ``tf.function``'s concrete function with its variables made constants (for the v1 profiler)."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    return convert_variables_to_constants_v2(concrete_function).graph
