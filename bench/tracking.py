"""Tracking overhead: what Optuna + MLflow bookkeeping adds to a trial, against the same training untracked.

    .venv/bin/python -m bench.tracking [--epochs 20] [--repeats 3]

Each repeat trains the default dense network (full 80/10/10 split of the original list) in two blocks
of ``--trials`` trainings in this process: plain ``training.fit`` calls, then one study call running as
many trials (SQLite Optuna storage, SQLite MLflow store: run creation, params, per-epoch metrics, tags,
artifacts, the model for a best-so-far trial). The overhead is the per-trial wall-time difference, in ms
and as a share of the plain training time; the median over repeats is the figure. Both blocks run in the
same process, alternating, so background load affects both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20, help="epochs per training (the dense default is 20)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trials", type=int, default=5, help="trials per block: one study call runs them all")
    parser.add_argument("--out", default="bench/results/tracking.json")
    args = parser.parse_args()

    import keras
    import optuna

    from cicy_search import study as studies
    from cicy_search import studyfile
    from cicy_search.training import fit, prepare

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="bench-tracking-"))
    os.environ["CICY_SEARCH_HOME"] = str(tmp)
    spec = studyfile.parse(
        {
            "study": "bench-tracking",
            "base": "dense",
            "train": {"epochs": args.epochs},
            "space": {"train.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-3}},
            "sampler": {"name": "random", "seed": 0},
        }
    )
    config = spec.config_for({"train.learning_rate": 1e-3}, seed=0)
    prepared = prepare(config)
    fit(config, prepared)  # warm-up: graph tracing, data caches
    keras.backend.clear_session()
    storage, tracking_uri = f"sqlite:///{tmp / 'optuna.db'}", f"sqlite:///{tmp / 'mlflow.db'}"
    studies.create(spec, storage=storage, tracking_uri=tracking_uri)  # one-off: schema creation is not per trial

    rows = []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        for _ in range(args.trials):
            plain = fit(config, prepared)
            keras.backend.clear_session(free_memory=False)  # a plain search loop resets Keras too
        plain_s = (time.perf_counter() - t0) / args.trials
        t0 = time.perf_counter()
        summary = studies.run(spec, storage=storage, tracking_uri=tracking_uri, n_trials=(r + 1) * args.trials)
        tracked_s = (time.perf_counter() - t0) / args.trials
        rows.append({"plain_s": plain_s, "tracked_s": tracked_s, "overhead_ms": 1000 * (tracked_s - plain_s),
                     "train_s": plain.seconds, "val_accuracy": summary.study.trials[-1].value})
    overhead = statistics.median(r["overhead_ms"] for r in rows)
    train = statistics.median(r["plain_s"] for r in rows)
    result = {"epochs": args.epochs, "repeats": rows, "median_overhead_ms": overhead,
              "median_plain_trial_s": train, "overhead_share": overhead / 1000 / train}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    for r in rows:
        print(f"per trial: plain {r['plain_s']:.2f} s  tracked {r['tracked_s']:.2f} s  overhead {r['overhead_ms']:.0f} ms")
    print(f"median overhead {overhead:.0f} ms per trial = {100 * result['overhead_share']:.1f}% of {train:.2f} s training "
          f"({args.epochs} epochs, dense default, SQLite storage + SQLite MLflow)")


if __name__ == "__main__":
    main()
