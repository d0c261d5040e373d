"""Time to accuracy on h11 (80% train): the literature's recipe against the project's best, in one process.

Each recipe trains with its own config until its validation accuracy first reaches every threshold, or
until its time budget runs out (the budget is checked after each epoch). Recorded per epoch: wall time
since the start of training (model building and the first epoch's tracing included) and validation
accuracy. The test split is not read.

- ``literature``: Erbin & Finotello's inception network as shipped (``configs/inception.yaml``: batch 32,
  Adam 1e-3, MSE regression, no early stopping here);
- ``project``: ``configs/koszul_linear.yaml`` on h11 alone (a linear model on the Koszul counts shared out over
  the canonical matrix: the results table's best), or another shipped config with ``--project``.

The preparation (loading, canonical form, invariants) is timed apart, cold (``prepare_seconds``: nothing
remembered, an empty invariants cache) and again with the disk cache the first filled (``prepare_cached_seconds``:
what every later run or study worker pays); ``speedup_with_prepare*`` add each to both recipes' times.

    python -m bench.time_to_accuracy [--thresholds 0.8,0.9,0.93,0.99] [--budget-literature 1200] [--budget-project 600] [--project koszul_linear] [--limit N]

Thresholds one recipe never reached within its budget are reported as lower bounds of the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from cicy_search import data as cicy_data
from cicy_search.config import load_config, resolve
from cicy_search.training import EpochCallback, fit, prepare

from .throughput import RESULTS


class Budget(EpochCallback):
    """Records (seconds, val_accuracy) per epoch and stops training at the threshold or the time budget."""

    def __init__(self, start: float, budget: float, stop_at: float):
        self.start, self.budget, self.stop_at, self.curve = start, budget, stop_at, []
        super().__init__(self._epoch)

    def _epoch(self, epoch: int, logs: dict) -> None:
        elapsed = time.perf_counter() - self.start
        self.curve.append((elapsed, float(logs["val_accuracy"])))
        print(f"  epoch {epoch}: {elapsed:.1f} s, val_accuracy {logs['val_accuracy']:.4f}", flush=True)
        if logs["val_accuracy"] >= self.stop_at or elapsed >= self.budget:
            self.model.stop_training = True


#: The split both recipes train and validate on, whatever their own config says (a study's best found at 30% train
#: would otherwise train on 30%, with shorter epochs, and be validated on other manifolds).
SPLIT = {"train": 0.8, "val": 0.1, "test": 0.1, "seed": 0}


def recipe(name: str, epochs: int, limit: int | None = None) -> dict:
    config = load_config(name)
    # h11: what both learn, on the same split
    config["data"] = {**config["data"], **SPLIT, "targets": ["h11"], "physics": False, **({"limit": limit} if limit else {})}
    config["train"] = {**config["train"], "epochs": epochs, "early_stopping": 0}
    if config["train"]["lr_schedule"] == "cosine":
        config["train"]["lr_schedule"] = "none"  # a schedule tied to a fixed epoch count would favour it
    return resolve(config)


def first_reach(curve: list[tuple[float, float]], threshold: float):
    for epoch, (seconds, acc) in enumerate(curve):
        if acc >= threshold:
            return {"seconds": round(seconds, 1), "epochs": epoch + 1}
    return None


def timed_prepare(config: dict):
    """Prepare a recipe's arrays twice, as a first run would (nothing remembered: an empty disk cache) and as
    every later process would (the invariants' disk cache filled by the first): (prepared, seconds of each)."""
    seconds, before = {}, os.environ.get("CICY_CACHE_DIR")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["CICY_CACHE_DIR"] = cache
        try:
            for key in ("prepare_seconds", "prepare_cached_seconds"):
                cicy_data.forget()
                started = time.perf_counter()
                prepared = prepare(config)
                seconds[key] = round(time.perf_counter() - started, 1)
        finally:
            if before is None:
                del os.environ["CICY_CACHE_DIR"]
            else:
                os.environ["CICY_CACHE_DIR"] = before
    return prepared, seconds


def speedups(recipes: dict, thresholds: list[float], budget: float, extra: str | None = None) -> dict:
    """Literature time / project time to each threshold (a lower bound when the literature never reached it),
    each recipe's ``extra`` seconds (its preparation) added to its time when given."""
    out = {}
    for t in thresholds:
        (lit, lit_extra), (proj, proj_extra) = (
            (recipes[k]["reached"][str(t)], recipes[k][extra] if extra else 0.0) for k in ("literature", "project")
        )
        if proj and lit:
            out[str(t)] = {"speedup": round((lit["seconds"] + lit_extra) / (proj["seconds"] + proj_extra), 1)}
        elif proj:
            out[str(t)] = {"speedup_at_least": round((budget + lit_extra) / (proj["seconds"] + proj_extra), 1)}
        else:
            out[str(t)] = None
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.time_to_accuracy", description=__doc__.splitlines()[0])
    parser.add_argument("--thresholds", default="0.8,0.9,0.93,0.99")
    parser.add_argument("--budget-literature", type=float, default=1200.0, help="seconds")
    parser.add_argument("--budget-project", type=float, default=600.0, help="seconds")
    parser.add_argument("--project", default="koszul_linear", help="the project's recipe: a shipped config")
    parser.add_argument("--limit", type=int, default=None, help="a random slice of this many manifolds (a quick check; not the figure)")
    parser.add_argument("--out", default=str(RESULTS / "time_to_accuracy.json"))
    args = parser.parse_args(argv)
    thresholds = [float(t) for t in args.thresholds.split(",")]
    runs = {
        "literature": (recipe("inception", 1000, args.limit), args.budget_literature),
        "project": (recipe(args.project, 1000, args.limit), args.budget_project),
    }
    out: dict = {"thresholds": thresholds, "limit": args.limit, "split": SPLIT, "load_before": os.getloadavg(), "recipes": {}}
    for name, (config, budget) in runs.items():
        print(f"{name}: {config['model']['family']}, budget {budget:.0f} s", flush=True)
        prepared, prepare_seconds = timed_prepare(config)
        start = time.perf_counter()
        cb = Budget(start, budget, max(thresholds))
        fit(config, prepared, callbacks=[cb])
        curve = [[round(s, 2), a] for s, a in cb.curve]  # the first reaches are read off the curve as recorded
        out["recipes"][name] = {
            "config": config["name"], "budget_seconds": budget, **prepare_seconds, "curve": curve,
            "reached": {str(t): first_reach(curve, t) for t in thresholds},
        }
    out["speedup"] = speedups(out["recipes"], thresholds, args.budget_literature)
    for key in ("prepare_seconds", "prepare_cached_seconds"):  # each recipe's preparation added to its time
        out[f"speedup_with_{key.removesuffix('_seconds')}"] = speedups(out["recipes"], thresholds, args.budget_literature, key)
    out["load_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k.startswith("speedup")}, indent=1))
    return out


if __name__ == "__main__":
    main()
