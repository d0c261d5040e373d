"""What a trial costs outside its epochs, cut without changing a number: one trace of the training step for dense
networks, one traced epoch shared by the dense trials of a depth (``SharedDenseLoop``), the Euler numbers of the
permuted test split taken from the test split's, and every trial's result the same whether it runs alone in a fresh
process or after other trials.

No timings here: bench/trial.py measures them.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from cicy_search import data as cicy_data
from cicy_search.config import resolve
from cicy_search.training import (
    PERMUTED_SEED,
    SharedDenseLoop,
    _build_state,
    _each_batch,
    compile_model,
    encode,
    evaluate,
    fit,
    prepare,
    shared_loop,
)
from cicy_search.models import build

# About 480 training samples at batch 50: 9 full batches and a partial one.
CONFIG = {"data": {"limit": 600}, "model": {"depth": 2, "width": 24, "dropout": 0.1, "l2": 1e-4}, "train": {"epochs": 2, "batch_size": 50}}


def _one_epoch(config, prepared, static: bool):
    """One epoch of ``_each_batch`` on a freshly seeded model; returns its weights and how often the step was traced."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(config["seed"])
    model = build(config, prepared.shape, prepared.targets)
    compile_model(model, config, prepared.targets, 10)
    x = tf.convert_to_tensor(prepared.x["train"])
    y = tf.convert_to_tensor(encode(prepared.y["train"], prepared.targets, "classification"))
    _build_state(model, x[:1], y[:1])
    traced = []

    def step(batch):
        traced.append(batch[0].shape[0])
        return model.train_step(batch)

    order = tf.constant(np.random.default_rng(0).permutation(len(prepared.x["train"])), dtype=tf.int32)
    tf.function(lambda o: _each_batch(step, x, y, o, config["train"]["batch_size"], static=static))(order)
    assert int(model.optimizer.iterations) == -(-len(prepared.x["train"]) // 50)  # every batch, the partial one too
    return model.get_weights(), traced


def test_dense_step_is_traced_once_with_the_same_numbers():
    config = resolve(CONFIG)
    prepared = prepare(config)
    once, traced_once = _one_epoch(config, prepared, static=False)
    twice, traced_twice = _one_epoch(config, prepared, static=True)
    assert traced_once == [None]  # one trace, batches of any size
    rest = len(prepared.x["train"]) % 50
    assert 0 < rest and traced_twice == [50, rest]  # XLA's and convolutions' loop: the full batches, then the remainder
    for a, b in zip(once, twice):
        np.testing.assert_array_equal(a, b)


def test_permuted_test_split_scores_with_its_own_euler_numbers():
    config = resolve({"data": {"limit": 600}, "train": {"epochs": 1}})
    prepared = prepare(config)
    result = fit(config, prepared)
    metrics = evaluate(result.model, prepared, "classification")
    # What the permuted matrices' own Euler numbers give (exact invariants are invariant under permutations).
    permuted = cicy_data.permute(prepared.matrices["test"], PERMUTED_SEED)
    raw = result.model.predict(permuted.astype(np.float32), verbose=0).argmax(axis=1) + prepared.targets[0].low
    euler, _ = cicy_data.exact_invariants(permuted)
    expected = float(np.mean(raw - euler // 2 == prepared.dataset.y("h21")[prepared.index["test"]]))
    assert metrics["test_permuted_h21_physics_accuracy"] == pytest.approx(expected, abs=1 / len(permuted))
    assert metrics["test_permuted_h21_physics_accuracy"] > 0  # the scores are real, not an empty split


ALONE = """
import json, sys, numpy as np
from cicy_search.config import resolve
from cicy_search.training import fit
r = fit(resolve(json.loads(sys.argv[1])))
print(json.dumps({"metrics": r.metrics, "history": r.history, "weights": [w.tobytes().hex() for w in r.model.get_weights()]}))
"""


def _summary(result) -> dict:
    return {"metrics": result.metrics, "history": result.history, "weights": [w.tobytes().hex() for w in result.model.get_weights()]}


# Another depth (its own traced epoch), and the same depth (the first one's epoch, reused with other widths,
# dropout, L2 and learning rate, the narrower layer after a wider one).
SECOND = {
    "other-depth": {"seed": 7, "model": {"depth": 3, "width": 40}, "train": {"learning_rate": 0.003}},
    "same-depth": {"seed": 7, "model": {"width": [48, 16], "dropout": 0.3, "l2": 3e-3}, "train": {"learning_rate": 0.004}},
}


@pytest.mark.slow
def test_a_trial_after_another_is_the_trial_trained_alone():
    fit(resolve(CONFIG))  # a trial before them in this process: traced functions, Keras state, random generators
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    for case in sorted(SECOND):  # each after the first trial (and "same-depth" after "other-depth" too)
        change = SECOND[case]
        second = {**CONFIG, "seed": change["seed"], "model": {**CONFIG["model"], **change["model"]}, "train": {**CONFIG["train"], **change["train"]}}
        keras.backend.clear_session()  # what the objective does between trials
        after = _summary(fit(resolve(second)))
        out = subprocess.run([sys.executable, "-c", ALONE, json.dumps(second)], capture_output=True, text=True, env=env, check=True)
        alone = json.loads(out.stdout.strip().splitlines()[-1])
        assert after["weights"] == alone["weights"], case
        assert after["history"] == alone["history"], case
        assert after["metrics"] == pytest.approx(alone["metrics"], rel=0, abs=0, nan_ok=True), case


def _signature(result, prepared):
    x = tf.convert_to_tensor(prepared.x["train"])
    return SharedDenseLoop.signature_of(result.model, x, tf.convert_to_tensor(encode(prepared.y["train"], prepared.targets, "classification")))


def test_dense_trials_of_a_depth_share_one_traced_epoch():
    base = resolve({**CONFIG, "train": {"epochs": 1}})
    prepared = prepare(base)
    signatures = set()
    for width, dropout, l2, lr in [(24, 0.1, 1e-4, 1e-3), (64, 0.3, 1e-2, 3e-3), ([16, 40], 0.05, 1e-6, 1e-2)]:
        model = {**CONFIG["model"], "width": width, "dropout": dropout, "l2": l2}
        result = fit(resolve({**CONFIG, "model": model, "train": {"epochs": 1, "learning_rate": lr}}), prepared)
        keras.backend.clear_session()
        signatures.add(_signature(result, prepared))
        first, second = width if isinstance(width, list) else [width, width]
        assert [w.shape for w in result.model.get_weights()][:3] == [(180, first), (first,), (first, second)]
    (signature,) = signatures  # widths, dropout rates, L2 and learning rates are not part of it
    assert signature is not None
    assert shared_loop(signature).epoch.experimental_get_tracing_count() == 1
    deeper = fit(resolve({**CONFIG, "model": {**CONFIG["model"], "depth": 3}, "train": {"epochs": 1}}), prepared)
    assert _signature(deeper, prepared) != signature  # another depth: another traced epoch


def test_continued_training_is_the_run_in_one_go(tmp_path):
    # Weights, Adam's slots and step go from the shared loop to the Keras model and back (keras-tuner's Hyperband
    # continues a trial from its saved weights). Without dropout: its layers' seeds are not in a weights file.
    base = {**CONFIG, "model": {**CONFIG["model"], "dropout": 0.0}}
    config = resolve({**base, "train": {"epochs": 4, "batch_size": 50}})
    prepared = prepare(config)
    whole = fit(config, prepared)
    first = fit(resolve({**base, "train": {"epochs": 2, "batch_size": 50}}), prepared)
    assert int(first.model.optimizer.iterations) == 2 * 10
    path = str(tmp_path / "two.weights.h5")
    first.model.save_weights(path)
    rest = fit(config, prepared, initial_weights=path, initial_epoch=2)
    assert rest.epochs_run == 2 and rest.history["loss"] == whole.history["loss"][2:]
    for a, b in zip(rest.model.get_weights(), whole.model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_many_trials_log_no_retracing_warning():
    # Each trial's model is new, so is its traced epoch; TensorFlow warns when one Python function is traced
    # over and over unless it was traced through get_concrete_function. Batch norm: not the shared dense loop.
    # It warns at 5 traces among a function's last 10 calls: 5 trials (one call an epoch) would draw it.
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    try:
        config = resolve({"data": {"limit": 300}, "model": {"depth": 1, "width": 8, "batch_norm": True}, "train": {"epochs": 1}})
        prepared = prepare(config)
        for seed in range(5):
            fit({**config, "seed": seed}, prepared)
            keras.backend.clear_session()
    finally:
        logger.removeHandler(handler)
    assert not [r for r in records if "retracing" in r.getMessage()]
