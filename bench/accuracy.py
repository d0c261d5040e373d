"""Does the fast loop change results? Accuracy at fixed seeds and epochs: fast loop against ``model.fit``.

Three ways to train the same config from the same seeds:

- ``project``: the fast loop (``train.loop: fast``), reshuffling every epoch from the seed;
- ``plain fit``: ``model.fit(x, y, shuffle=True)``. Under a fixed seed (``keras.utils.set_random_seed``)
  Keras 3.15 / TF 2.21 shuffle once and then repeat that order in every epoch;
- ``fit, reshuffled``: ``model.fit`` one epoch per call on the fast loop's own order: the reference for
  "same computation", which shows what any difference from ``plain fit`` is due to.

    python -m bench.accuracy [--seeds 3] [--epochs 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import keras
import numpy as np

from cicy_search.config import resolve
from cicy_search.models import build
from cicy_search.training import compile_model, encode, evaluate, fit, prepare

from .throughput import RESULTS


def fit_in_order(config: dict, prepared):
    """``model.fit`` one epoch per call on the fast loop's documented order (NumPy permutations from the seed).

    Returns the model, its history and its scores.
    """
    keras.utils.set_random_seed(config["seed"])
    head = config["model"]["head"]
    model = build(config, prepared.shape, prepared.targets)
    keras_config = resolve({**config, "train": {**config["train"], "loop": "keras", "jit_compile": False}})
    compile_model(model, keras_config, prepared.targets, 1)
    x, y = prepared.x["train"], encode(prepared.y["train"], prepared.targets, head)
    val = (prepared.x["val"], encode(prepared.y["val"], prepared.targets, head))
    rng = np.random.default_rng(config["seed"])
    history: dict[str, list[float]] = {}
    for _ in range(config["train"]["epochs"]):
        order = rng.permutation(len(x))
        ordered_y = {k: v[order] for k, v in y.items()} if isinstance(y, dict) else y[order]
        h = model.fit(x[order], ordered_y, batch_size=config["train"]["batch_size"], epochs=1, shuffle=False, validation_data=val, verbose=0)
        for k, v in h.history.items():
            history.setdefault(k, []).extend(float(a) for a in v)
    return model, history, evaluate(model, prepared, head)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", default=str(RESULTS / "accuracy.json"))
    args = parser.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    prepared = prepare(resolve({}))
    runs: dict[str, list[dict]] = {"project": [], "plain fit": [], "fit, reshuffled": []}
    for seed in range(args.seeds):
        config = resolve({"seed": seed, "train": {"epochs": args.epochs}})
        plain = resolve({"seed": seed, "train": {"epochs": args.epochs, "loop": "keras", "steps_per_execution": 1, "jit_compile": False}})
        for name, result in (("project", fit(config, prepared)), ("plain fit", fit(plain, prepared))):
            runs[name].append({"seed": seed, **{k: result.metrics[k] for k in ("val_accuracy", "test_accuracy")}, "loss": result.history["loss"][-1]})
        _, history, metrics = fit_in_order(config, prepared)
        runs["fit, reshuffled"].append({"seed": seed, **{k: metrics[k] for k in ("val_accuracy", "test_accuracy")}, "loss": history["loss"][-1]})
    table = Table(title=f"dense (config {{}}), {args.epochs} epochs, seeds 0..{args.seeds - 1}: mean ± sd over seeds")
    for col in ("loop", "val accuracy", "test accuracy", "final train loss", "per seed (test)"):
        table.add_column(col)
    summary = {}
    for name, rs in runs.items():
        stats = {k: (statistics.mean(r[k] for r in rs), statistics.stdev(r[k] for r in rs) if len(rs) > 1 else 0.0) for k in ("val_accuracy", "test_accuracy", "loss")}
        summary[name] = {"runs": rs, "mean_sd": stats}
        table.add_row(name, *(f"{m:.4f} ± {s:.4f}" for m, s in stats.values()), ", ".join(f"{r['test_accuracy']:.3f}" for r in rs))
    Console(width=150).print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"epochs": args.epochs, "seeds": args.seeds, "loops": summary}, indent=1))
    return summary


if __name__ == "__main__":
    main()
