"""The fast training loop (``training.fast_fit``) computes what ``model.fit`` computes, only faster.

No timings here: speed is measured in bench/. These tests pin the results: same batches, same numbers.
"""

import keras
import numpy as np
import pytest

from bench.accuracy import fit_in_order
from cicy_search.config import resolve
from cicy_search.models import build
from cicy_search.training import EpochCallback, SharedDenseLoop, encode, fit, prepare, use_xla

from .conftest import tiny


REGULARISED = {"depth": 2, "width": [40, 24], "dropout": 0.2, "l1": 1e-5, "l2": 1e-3}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("xla", "model"),
    [(False, {}), (True, {}), (False, REGULARISED), (False, {"head": "regression", "dropout": 0.1, "l2": 1e-4})],
    ids=["shared-loop", "xla", "shared-loop-dropout-l1-l2", "shared-loop-regression"],
)
def test_fast_loop_is_model_fit_on_the_same_batches(xla, model):
    # 480 training samples at batch 50: 9 full batches and a partial one of 30, which XLA compiles separately.
    # Without XLA these dense networks train in the shared loop (SharedDenseLoop), with the same dropout masks.
    config = resolve({"data": {"limit": 600}, "model": model, "train": {"epochs": 3, "batch_size": 50, "jit_compile": xla}})
    prepared = prepare(config)
    fast = fit(config, prepared)
    model, history, metrics = fit_in_order(config, prepared)
    assert fast.extra["xla"] is xla
    train = (prepared.x["train"], encode(prepared.y["train"], prepared.targets, config["model"]["head"]))
    assert xla or SharedDenseLoop.signature_of(fast.model, *train) is not None  # trained in the shared loop
    assert set(fast.history) == set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    for key in history:
        np.testing.assert_allclose(fast.history[key], history[key], rtol=2e-3, atol=1e-5, err_msg=key)
    for a, b in zip(fast.model.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    assert int(fast.model.optimizer.iterations) == 3 * 10  # every sample, every epoch: 9 full batches + 1 partial
    assert abs(fast.metrics["test_accuracy"] - metrics["test_accuracy"]) <= 1 / len(prepared.x["test"])


@pytest.mark.slow
def test_fast_and_keras_loops_reach_the_same_accuracy():
    # The statistical check the search cares about: same seed and epochs, accuracy equal within noise
    # (model.fit shuffles into one fixed order for all epochs when seeded, the fast loop reshuffles).
    results = {
        loop: fit(resolve({"data": {"limit": 1500}, "train": {"epochs": 6, "loop": loop}}))
        for loop in ("fast", "keras")
    }
    fast, keras_ = results["fast"], results["keras"]
    assert abs(fast.metrics["val_accuracy"] - keras_.metrics["val_accuracy"]) < 0.08
    assert abs(fast.history["loss"][-1] - keras_.history["loss"][-1]) < 0.15 * keras_.history["loss"][-1]
    assert fast.history["loss"][-1] < 0.7 * fast.history["loss"][0]


def test_callbacks_see_every_epoch_and_early_stopping_stops():
    seen = []
    config = resolve({"data": {"limit": 300}, "train": {"epochs": 40, "early_stopping": 1, "learning_rate": 0.01}})
    result = fit(config, callbacks=[EpochCallback(lambda epoch, logs: seen.append((epoch, sorted(logs))))])
    assert result.epochs_run < 40
    assert [e for e, _ in seen] == list(range(result.epochs_run))
    assert seen[0][1] == ["accuracy", "loss", "val_accuracy", "val_loss"]
    val_loss = result.history["val_loss"]
    assert np.argmin(val_loss) == len(val_loss) - 2  # patience 1: stopped one epoch after the best


def test_multi_task_fast_loop_logs_each_head():
    config = resolve({"data": {"targets": ["h11", "h21"], "limit": 300}, "model": {"head": "regression"}, "train": {"epochs": 2}})
    result = fit(config)
    assert {"loss", "h11_loss", "h21_loss", "h11_accuracy", "val_h21_accuracy"} <= set(result.history)


def test_xla_auto_is_chosen_per_model_and_run_length():
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("on a GPU auto always means XLA")
    shape, targets = (12, 15), prepare(tiny()).targets
    dense = build(resolve({}), shape, targets)
    assert use_xla(resolve({}), dense, 197)  # the default run: 20 epochs x 197 steps repay the compile
    assert not use_xla(resolve({"train": {"epochs": 2}}), dense, 197)
    assert not use_xla(resolve({"train": {"jit_compile": False}}), dense, 197)
    for family in ("cnn", "inception"):
        config = resolve({"model": {"family": family}, "train": {"epochs": 100}})
        assert not use_xla(config, build(config, shape, targets), 197)
    config = resolve({"model": {"family": "cnn"}, "train": {"jit_compile": True}})
    assert use_xla(config, build(config, shape, targets), 1)


@pytest.mark.slow
@pytest.mark.parametrize("xla", [False, True])
def test_mixed_precision_builds_and_trains(xla):
    config = resolve({"data": {"limit": 300}, "train": {"epochs": 2, "mixed_precision": True, "jit_compile": xla}})
    result = fit(config)
    assert result.model.dtype_policy.name == "mixed_float16"
    assert isinstance(result.model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert all(np.isfinite(result.history["loss"])) and result.history["loss"][1] < result.history["loss"][0]
    assert result.model.get_weights()[0].dtype == np.float32  # float32 weights, float16 arithmetic
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored


@pytest.mark.slow
@pytest.mark.parametrize(
    "model",
    [{"depth": 2, "width": 24, "dropout": 0.15, "l2": 1e-4}, {"depth": 3, "width": [40, 20, 10], "dropout": 0.35, "l1": 1e-5},
     {"depth": 1, "width": 64, "dropout": 0.05, "head": "regression"}],
    ids=["dropout-l2", "widths-l1", "regression"],
)
def test_shared_loop_is_the_models_own_step_bit_for_bit(model, monkeypatch):
    # The same numbers as model.train_step in the model's own traced epoch: dropout masks and scale, L1/L2, Adam.
    config = resolve({"data": {"limit": 600}, "model": model, "train": {"epochs": 3, "batch_size": 50}})
    prepared = prepare(config)
    shared = fit(config, prepared)
    monkeypatch.setattr(SharedDenseLoop, "signature_of", staticmethod(lambda *args: None))
    keras.backend.clear_session()
    own = fit(config, prepared)
    assert shared.history == own.history
    for a, b in zip(shared.model.get_weights(), own.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(shared.model.optimizer.iterations) == int(own.model.optimizer.iterations) == 3 * 10
