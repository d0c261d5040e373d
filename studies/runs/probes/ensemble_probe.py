"""Validation-only probe: one recipe over K training seeds, and how much averaging them gains over one model.

Trains K members of a recipe on one split (training seeds split seed + 0, 1000, ...), averages their softmax
outputs on the validation split and prints each member's and the running ensemble's validation h11 accuracy, and
the members' mean. The test split is not printed or used. KEY=VALUE arguments override the recipe (dotted keys,
YAML values), e.g. ``model.update_layers=2``.

    PYTHONPATH=$PWD .venv/bin/python studies/runs/probes/ensemble_probe.py RECIPE FRACTION SPLIT_SEED K [KEY=VALUE ...]
"""

import sys
import time

import keras
import numpy as np
import yaml

from cicy_search import training
from cicy_search.config import load_config, merge, resolve, set_path


def members(base: dict, fraction: float, split_seed: int, k: int, label: str = ""):
    """Yields (validation accuracy, validation softmax outputs, ensemble accuracy so far) for K training seeds."""
    split = {"train": fraction, "val": 0.1, "test": round(0.9 - fraction, 6), "seed": split_seed}
    prepared, probs = None, []
    for member in range(k):
        config = resolve(merge(base, {"seed": split_seed + 1000 * member, "data": split}))
        prepared = prepared or training.prepare(config)
        t0 = time.perf_counter()
        result = training.fit(config, prepared)
        out = result.model(prepared.x["val"].astype(np.float32), training=False)
        probs.append(keras.ops.convert_to_numpy(out["h11"] if isinstance(out, dict) else out))
        truth = prepared.y["val"]["h11"]
        one, ens = (float(np.mean(training.decode(p, result.targets, "classification")["h11"] == truth)) for p in (probs[-1], np.mean(probs, axis=0)))
        print(
            f"{label}fraction {fraction} split {split_seed} member {member} (seed {config['seed']}): val {one:.4f}, "
            f"ensemble of {member + 1}: {ens:.4f}; train {result.metrics['train_h11_accuracy']:.4f}; {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        keras.backend.clear_session()
        yield one, probs[-1], ens


def overrides(args: list[str]) -> dict:
    """KEY=VALUE arguments (dotted keys, YAML values) as a nested override."""
    override: dict = {}
    for arg in args:
        key, value = arg.split("=", 1)
        set_path(override, key, yaml.safe_load(value))
    return override


if __name__ == "__main__":
    recipe, fraction, split_seed, k = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    vals = [one for one, _, _ in members(load_config(recipe, overrides(sys.argv[5:])), fraction, split_seed, k)]
    print(f"members' validation: mean {np.mean(vals):.4f}, std {np.std(vals):.4f}")
