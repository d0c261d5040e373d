"""Contracts of ``cicy_search/compat.py``: one test per private name of a library it uses.

Each test runs the name the way the package does and fails naming it, the installed version and the version
pyproject.toml pins, so that a release that moves or changes it is found here and not in a study.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import tomllib
import warnings
from collections import Counter
from importlib.metadata import version
from pathlib import Path

import optuna
import pytest

from cicy_search import compat

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
S = optuna.trial.TrialState


def pin(distribution: str) -> str:
    """The requirement pyproject.toml gives ``distribution`` (``optuna==5.1.*``)."""
    for requirement in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]:
        if re.match(rf"{re.escape(distribution)}\s*[=<>~!]", requirement):
            return requirement.split(";")[0].strip()
    return f"{distribution} (not pinned)"


@contextlib.contextmanager
def contract(name: str, distribution: str):
    """Turn any failure inside into one message: which private name broke, in which version, against which pin."""
    try:
        yield
    except Exception as e:  # AssertionError included: the name is there but does something else now
        pytest.fail(
            f"{name} changed in {distribution} {version(distribution)} (pyproject.toml pins {pin(distribution)}): "
            f"{type(e).__name__}: {e}; update cicy_search/compat.py for it, or pin the version it works with",
            pytrace=False,
        )


def test_the_contract_message_names_the_name_the_version_and_the_pin():
    with pytest.raises(pytest.fail.Exception, match=r"Study\._storage changed in optuna 5\.1\.\d+ \(pyproject.toml pins optuna==5\.1\.\*\)"):
        with contract("Study._storage", "optuna"):
            raise AttributeError("'Study' object has no attribute '_storage'")


def test_every_library_the_adapter_uses_is_pinned_to_a_minor_version():
    for distribution in ("optuna", "optuna-integration", "mlflow", "keras", "keras-tuner", "typer", "tensorflow-cpu"):
        assert re.fullmatch(rf"{distribution}==\d+\.\d+\.(\*|\d+)", pin(distribution)), pin(distribution)


def _journal(tmp_path, name: str = "o.log", **heartbeat):
    from cicy_search.search.storage import open_storage

    return open_storage(f"journal:{tmp_path / name}", **heartbeat)


@pytest.mark.waits
@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_base_heartbeat_and_its_stale_trial_hook(tmp_path):
    """``optuna.storages._heartbeat.BaseHeartbeat`` with ``_get_stale_trial_ids``: what ``fail_stale_trials`` asks."""
    with contract("optuna.storages._heartbeat.BaseHeartbeat._get_stale_trial_ids", "optuna"):
        storage = _journal(tmp_path, heartbeat_interval=1, grace_period=2)
        study = optuna.create_study(study_name="stale", storage=storage)
        study.ask()
        time.sleep(2.2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        assert [t.state for t in study.get_trials(deepcopy=False)][0] == S.FAIL


def test_is_heartbeat_enabled(tmp_path):
    """``optuna.storages._heartbeat.is_heartbeat_enabled``: true for storages with an interval, false without."""
    with contract("optuna.storages._heartbeat.is_heartbeat_enabled", "optuna"):
        assert compat.heartbeat_enabled(_journal(tmp_path, heartbeat_interval=5, grace_period=10))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            rdb = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}", heartbeat_interval=5, grace_period=10)
        assert compat.heartbeat_enabled(rdb)
        assert not compat.heartbeat_enabled(optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'p.db'}"))
        assert not compat.heartbeat_enabled(optuna.storages.InMemoryStorage())


def test_study_storage(tmp_path):
    """``Study._storage``: the storage a study was loaded with (an RDB one inside Optuna's cache)."""
    with contract("Study._storage", "optuna"):
        journal = _journal(tmp_path)
        assert compat.study_storage(optuna.create_study(study_name="s", storage=journal)) is journal
        rdb = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}")
        cached = compat.study_storage(optuna.create_study(study_name="s", storage=rdb))
        assert isinstance(cached, optuna.storages.BaseStorage) and cached.get_study_id_from_name("s") == rdb.get_study_id_from_name("s")


def _states(study) -> None:
    for state in (S.COMPLETE, S.COMPLETE, S.PRUNED, S.FAIL):
        study.tell(study.ask(), 1.0 if state == S.COMPLETE else None, state=state)
    study.ask()
    study.enqueue_trial({})


def test_rdb_models_and_the_cached_storages_backend(tmp_path):
    """``optuna.storages._rdb.models`` (``TrialModel``, ``StudyModel``) and ``_CachedStorage._backend``: the trials per
    state of one study in one statement, as Optuna reads them."""
    with contract("optuna.storages._rdb.models / _CachedStorage._backend", "optuna"):
        url = f"sqlite:///{tmp_path / 'o.db'}"
        other = optuna.create_study(study_name="other", storage=url)
        other.tell(other.ask(), 2.0)
        study = optuna.create_study(study_name="s", storage=url)
        _states(study)
        expected = Counter(t.state for t in study.get_trials(deepcopy=False))
        assert compat.rdb_count_states(study) == expected == {S.COMPLETE: 2, S.PRUNED: 1, S.FAIL: 1, S.RUNNING: 1, S.WAITING: 1}
        assert compat.rdb_count_states(optuna.create_study()) is None  # in memory: no database


def test_journal_replay(tmp_path):
    """``JournalStorage._thread_lock``, ``_sync_with_backend`` and ``_replay_result`` (``_studies``,
    ``_study_id_to_trial_ids``, ``_trials``): the trials another process appended, by id, in number order."""
    from optuna.storages.journal import JournalFileBackend

    with contract("JournalStorage._thread_lock/_sync_with_backend/_replay_result", "optuna"):
        path = str(tmp_path / "o.log")
        reader = optuna.storages.JournalStorage(JournalFileBackend(path))
        writer = optuna.storages.JournalStorage(JournalFileBackend(path))
        study = optuna.create_study(study_name="s", storage=writer)
        _states(study)
        study_id = reader.get_study_id_from_name("s")
        study.tell(study.ask(), 3.0)  # appended after the reader last looked (the queued trial, now complete)
        with compat.journal_replay(reader) as replay:
            assert study_id in replay.studies
            ids = list(replay.trial_ids[study_id])
            mine = [(replay.trials[i].number, replay.trials[i].state) for i in ids]
        assert mine == [(t.number, t.state) for t in writer.get_all_trials(study_id, deepcopy=False)] and len(mine) == 6
        assert not reader._thread_lock.locked()


def test_study_get_trials_is_what_samplers_read():
    """``Study._get_trials``: what TPE reads a study's trials through, so a ``StudyView`` decides what it sees."""

    class Counting(compat.StudyView):
        calls = 0

        def select(self, trials):
            Counting.calls += 1
            return trials[-3:]

    with contract("Study._get_trials", "optuna"):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=12)
        trial = study.ask()
        frozen = study.get_trials(deepcopy=False)[-1]
        sampler = optuna.samplers.TPESampler(n_startup_trials=5, seed=0)
        x = sampler.sample_independent(Counting(study), frozen, "x", optuna.distributions.FloatDistribution(0, 1))
        assert 0 <= x <= 1 and Counting.calls > 0
        assert len(Counting(study).trials) == 3
        study.tell(trial, 0.5)


def test_percentile_pruner_settings():
    """``PercentilePruner``'s ``_percentile``, ``_n_startup_trials``, ``_n_warmup_steps``, ``_interval_steps`` and
    ``_n_min_trials`` (``MedianPruner``'s too)."""
    with contract("PercentilePruner._percentile/_n_startup_trials/_n_warmup_steps/_interval_steps/_n_min_trials", "optuna"):
        pruner = optuna.pruners.PercentilePruner(25.0, n_startup_trials=3, n_warmup_steps=2, interval_steps=4, n_min_trials=5)
        assert compat.percentile_settings(pruner) == compat.PercentileSettings(25.0, 3, 2, 4, 5)
        assert compat.percentile_settings(optuna.pruners.MedianPruner(n_startup_trials=7)).percentile == 50.0


def test_optunas_trial_logger(caplog):
    """The logger ``optuna.study._optimize``: where Optuna logs a failed trial with its traceback."""

    def fails(trial):
        raise ValueError("planted")

    with contract(f"the logger {compat.OPTUNA_TRIAL_LOGGER}", "optuna"):
        logger = logging.getLogger(compat.OPTUNA_TRIAL_LOGGER)
        filters, logger.filters = logger.filters, []  # the CLI's filter, when a test ran it in this process
        optuna.logging.enable_propagation()
        try:
            with caplog.at_level(logging.WARNING, logger=compat.OPTUNA_TRIAL_LOGGER):
                optuna.create_study().optimize(fails, n_trials=1, catch=(ValueError,))
        finally:
            optuna.logging.disable_propagation()
            logger.filters = filters
        failed = [r for r in caplog.records if "planted" in r.getMessage() or (r.exc_info and "planted" in str(r.exc_info[1]))]
        assert failed and all(r.name == compat.OPTUNA_TRIAL_LOGGER for r in failed)


def test_typers_bundled_click_exceptions():
    """``typer._click.exceptions``: the usage errors typer raises (``ClickException``, ``NoArgsIsHelpError``)."""
    import typer

    with contract("typer._click.exceptions", "typer"):
        exceptions = compat.click_exceptions()
        assert issubclass(typer.BadParameter, exceptions.ClickException)
        assert issubclass(exceptions.NoArgsIsHelpError, exceptions.UsageError)
        app = typer.Typer(no_args_is_help=True)
        app.command()(lambda: None)
        app.command("other")(lambda: None)
        with pytest.raises(exceptions.NoArgsIsHelpError):
            app(args=[], standalone_mode=False)


def test_keras_history_names_the_source_layer():
    """``KerasTensor._keras_history``: the layer whose output a tensor is."""
    import keras

    with contract("KerasTensor._keras_history", "keras"):
        inputs = keras.Input((3,), name="features")
        hidden = keras.layers.Dense(2, name="hidden")(inputs)
        out = keras.layers.Dense(1, name="out")(hidden)
        keras.Model(inputs, out)
        assert compat.source_layer(hidden) == "hidden" and compat.source_layer(inputs) == "features"
        assert compat.source_layer(object()) is None


def test_seed_keras_is_set_random_seed_but_tensorflow():
    """``global_state``'s ``GLOBAL_RANDOM_SEED`` and ``GLOBAL_SEED_GENERATOR``: ``seed_keras`` seeds what
    ``keras.utils.set_random_seed`` seeds (weights, dropout seeds, ``keras.random``) and leaves TensorFlow's seed."""
    import keras
    import numpy as np
    import tensorflow as tf

    def drawn():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dropout(0.5)])
        return [*model.get_weights(), *(v.numpy() for v in model.non_trainable_variables), keras.random.uniform((2,)).numpy()]

    with contract("keras.src.backend.common.global_state GLOBAL_RANDOM_SEED, GLOBAL_SEED_GENERATOR", "keras"):
        tf.random.set_seed(11)
        keras.utils.set_random_seed(5)
        expected = drawn()
        tf.random.set_seed(11)
        before = tf.random.uniform((3,), seed=1).numpy()
        compat.seed_keras(5)
        for a, b in zip(drawn(), expected, strict=True):
            np.testing.assert_array_equal(a, b)
        tf.random.set_seed(11)
        assert (tf.random.uniform((3,), seed=1).numpy() == before).all()  # the op-level draw, TensorFlow's seed as set


@pytest.mark.parametrize("clear_caches", [False, True])
def test_reset_keras_resets_names_and_settings(clear_caches):
    """``global_state.GLOBAL_STATE_TRACKER``, ``GLOBAL_SETTINGS_TRACKER``: what ``clear_session`` resets, without
    TensorFlow's kernel caches unless asked."""
    import keras

    with contract("keras.src.backend.common.global_state GLOBAL_STATE_TRACKER, GLOBAL_SETTINGS_TRACKER", "keras"):
        keras.backend.clear_session()
        first = keras.layers.Dense(1).name
        assert keras.layers.Dense(1).name != first
        keras.config.set_dtype_policy("mixed_float16")
        compat.reset_keras(free_memory=False, clear_caches=clear_caches)
        assert keras.layers.Dense(1).name == first
        assert keras.config.dtype_policy().name == "float32"


def test_keras_tuner_debug_switch():
    """``keras_tuner.src.config.DEBUG``: off inside ``keras_tuner_quiet``, as it was after."""
    with contract("keras_tuner.src.config.DEBUG", "keras-tuner"):
        from keras_tuner.src import config

        before = config.DEBUG
        with compat.keras_tuner_quiet():
            assert config.DEBUG is False
        assert config.DEBUG == before


def test_keras_tuner_checkpoint_path(tmp_path):
    """``Tuner._get_checkpoint_fname``: a trial's weights file, in the trial's own folder."""
    import keras
    import keras_tuner

    def build(hp):
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(hp.Int("units", 1, 2))])
        model.compile(loss="mse")
        return model

    with contract("Tuner._get_checkpoint_fname", "keras-tuner"):
        tuner = keras_tuner.RandomSearch(build, objective="loss", max_trials=1, directory=str(tmp_path), project_name="p")
        path = Path(compat.checkpoint_path(tuner, "00"))
        assert path.parent == Path(tuner.get_trial_dir("00")) and path.name.endswith(".weights.h5")


def test_tensorflows_frozen_graph():
    """``tensorflow.python.framework.convert_to_constants.convert_variables_to_constants_v2``: a graph with no
    variables left, whose multiplications the profiler can count."""
    import tensorflow as tf

    with contract("tensorflow.python...convert_variables_to_constants_v2", "tensorflow-cpu"):
        w = tf.Variable([[1.0], [2.0]])
        fn = tf.function(lambda x: tf.matmul(x, w)).get_concrete_function(tf.TensorSpec([1, 2], tf.float32))
        ops = {op.type for op in compat.frozen_graph(fn).get_operations()}
        assert "MatMul" in ops and not ops & {"VarHandleOp", "ReadVariableOp"}
