"""What a trial costs outside its epochs, cut without changing a number: one trace of the training step for dense
networks, the Euler numbers of the permuted test split taken from the test split's, and every trial's result the
same whether it runs alone in a fresh process or after another trial.

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
from cicy_search.training import PERMUTED_SEED, _build_state, _each_batch, compile_model, encode, evaluate, fit, prepare
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


def test_a_trial_after_another_is_the_trial_trained_alone():
    second = {**CONFIG, "seed": 7, "model": {**CONFIG["model"], "depth": 3, "width": 40}, "train": {**CONFIG["train"], "learning_rate": 0.003}}
    fit(resolve(CONFIG))  # a trial before it in this process: traced functions, Keras state, random generators
    keras.backend.clear_session()  # what the objective does between trials
    after = _summary(fit(resolve(second)))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", ALONE, json.dumps(second)], capture_output=True, text=True, env=env, check=True)
    alone = json.loads(out.stdout.strip().splitlines()[-1])
    assert after["weights"] == alone["weights"]
    assert after["history"] == alone["history"]
    assert after["metrics"] == pytest.approx(alone["metrics"], rel=0, abs=0, nan_ok=True)
