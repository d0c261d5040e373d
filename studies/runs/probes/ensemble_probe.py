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
from cicy_search.config import load_config, merge, resolve

recipe, fraction, split_seed, k = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
split = {"train": fraction, "val": 0.1, "test": round(0.9 - fraction, 6), "seed": split_seed}
override: dict = {}
for arg in sys.argv[5:]:
    key, value = arg.split("=", 1)
    *path, last = key.split(".")
    node = override
    for part in path:
        node = node.setdefault(part, {})
    node[last] = yaml.safe_load(value)
base = load_config(recipe, override)
prepared = None
probs = []
for member in range(k):
    config = resolve(merge(base, {"seed": split_seed + 1000 * member, "data": split}))
    prepared = prepared or training.prepare(config)
    t0 = time.perf_counter()
    result = training.fit(config, prepared)
    out = result.model(prepared.x["val"].astype(np.float32), training=False)
    p = keras.ops.convert_to_numpy(out["h11"] if isinstance(out, dict) else out)
    probs.append(p)
    truth = prepared.y["val"]["h11"]
    one = float(np.mean(training.decode(p, result.targets, "classification")["h11"] == truth))
    ens = float(np.mean(training.decode(np.mean(probs, axis=0), result.targets, "classification")["h11"] == truth))
    print(
        f"fraction {fraction} split {split_seed} member {member}: val {one:.4f} (fit's {result.metrics['val_h11_accuracy']:.4f}), "
        f"ensemble of {member + 1}: {ens:.4f}; train {result.metrics['train_h11_accuracy']:.4f}; {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    keras.backend.clear_session()
members = [float(np.mean(training.decode(p, result.targets, "classification")["h11"] == prepared.y["val"]["h11"])) for p in probs]
print(f"members' validation: mean {np.mean(members):.4f}, std {np.std(members):.4f}")
