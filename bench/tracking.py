"""Tracking overhead: what Optuna + MLflow bookkeeping adds to a trial, against the same training untracked.

    .venv/bin/python -m bench.tracking [--epochs 20] [--pairs 40]

Trials of the default dense network (full 80/10/10 split of the original list; 20 epochs, about 3.4 s on a
quiet machine: the quickstart's kind of trial) run one by one in one process, in pairs: a plain trial
(``training.fit`` with the same Keras reset and garbage collection as the study's objective) and a tracked
trial (one trial of one Optuna study through the path ``study run`` takes: ``study.optimize_to_budget``
with the study's objective and the parent run's summary callback; SQLite Optuna storage, SQLite MLflow
store: run creation, params, dataset inputs, per-epoch metrics, tags, artifacts, the model for a
best-so-far trial, the parent run's summary). A tracked trial's time runs until the background uploader
has written all of it (``Uploader.flush``): its writes are counted in full, never left to overlap the next
trial. Pairs alternate their order (plain first, tracked first, tracked first, plain first, ...) so slow
drift cancels, each trial has its own seed, and both kinds run warm: preparing the data, the first
training (graph tracing), creating the study, its first tracked trial, the end of the study (the last
flush, the parent run's end) and the study report are timed once each, apart.

The figure is the median of the per-pair differences (tracked - plain) with a bootstrap 95 % interval, in
ms and as a share of the median plain trial, in wall time and in CPU time of the process (all threads,
the uploader's too); the load average is recorded before, after and at every pair.
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

BOOTSTRAP = 10_000


def interval(values: list[float], seed: int = 0) -> list[float]:
    """Bootstrap 95 % interval of the median of ``values`` (percentiles of resampled medians)."""
    import numpy as np

    x = np.asarray(values, dtype=float)
    medians = np.median(np.random.default_rng(seed).choice(x, size=(BOOTSTRAP, len(x))), axis=1)
    return [float(v) for v in np.percentile(medians, [2.5, 97.5])]


def summarise(pairs: list[dict]) -> dict:
    """Medians over ``pairs`` of the paired differences (with bootstrap 95 % intervals) and of the plain trial."""

    def column(key):
        return [p[key] for p in pairs]

    overhead, cpu = statistics.median(column("overhead_ms")), statistics.median(column("cpu_overhead_ms"))
    train, cpu_train = statistics.median(column("plain_s")), statistics.median(column("plain_cpu_s"))
    ci = interval(column("overhead_ms"))
    return {
        "n_pairs": len(pairs), "median_overhead_ms": overhead, "overhead_ci95_ms": ci, "median_plain_trial_s": train,
        "overhead_share": overhead / 1000 / train, "overhead_share_ci95": [v / 1000 / train for v in ci],
        "median_critical_path_ms": statistics.median(column("critical_path_ms")),
        "median_writes_wait_ms": statistics.median(column("writes_wait_ms")),
        "median_cpu_overhead_ms": cpu, "cpu_overhead_ci95_ms": interval(column("cpu_overhead_ms")),
        "median_plain_trial_cpu_s": cpu_train, "cpu_overhead_share": cpu / 1000 / cpu_train,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20, help="epochs per training (the dense default is 20)")
    parser.add_argument("--pairs", type=int, default=40, help="pairs of trials (one plain, one tracked) measured")
    parser.add_argument("--limit", type=int, default=None, help="use only this many matrices of the list (tests)")
    parser.add_argument("--dir", type=Path, default=None, help="folder for the Optuna and MLflow stores (default: a new temporary one)")
    parser.add_argument("--out", default="bench/results/tracking.json")
    args = parser.parse_args(argv)

    import keras
    import optuna

    from cicy_search import tracking
    from cicy_search.search import study as studies
    from cicy_search.search import studyfile
    from cicy_search.search.budget import optimize_to_budget
    from cicy_search.search.objective import GC_EVERY, Objective, trial_seed
    from cicy_search.tracking import links
    from cicy_search.reporting.study import report_study
    from cicy_search.tracking.summary import StudySummary
    from cicy_search.training import fit

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tmp = args.dir or Path(tempfile.mkdtemp(prefix="bench-tracking-"))
    os.environ["CICY_SEARCH_HOME"] = str(tmp)
    spec = studyfile.parse(
        {
            "study": "bench-tracking",
            "base": "dense",
            **({"data": {"limit": args.limit}} if args.limit else {}),
            "train": {"epochs": args.epochs},
            "space": {"train.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-3}},
            "sampler": {"name": "random", "seed": 0},
        }
    )
    values = {"train.learning_rate": 1e-3}
    storage, tracking_uri = f"sqlite:///{tmp / 'optuna.db'}", f"sqlite:///{tmp / 'mlflow.db'}"
    budget = 2 * args.pairs + 2
    one_off = {}

    def timed(name, fn):
        t0 = time.perf_counter()
        out = fn()
        one_off[name] = time.perf_counter() - t0
        return out

    load_before = os.getloadavg()
    study = timed("study_create_s", lambda: studies.create(spec, storage=storage, tracking_uri=tracking_uri, n_trials=budget))
    # What studies.run and drive set up once per study call; the objective prepares the data once for all trials.
    client, uploader = links.client(study, tracking_uri), tracking.uploader()
    objective = Objective(spec, mlflow_client=client, parent_run_id=links.parent_run_id(study), uploader=uploader)
    config = spec.config_for(values, seed=0)
    prepared = timed("prepare_s", lambda: objective.prepared(config))
    timed("first_fit_s", lambda: (fit(config, prepared), keras.backend.clear_session()))
    studies.reseed(study, spec)
    summary = StudySummary(study, client, budget=budget, uploader=uploader)
    summary.start()
    callbacks = [studies.reporter(None, spec, budget), summary.after_trial]

    def plain(number: int) -> dict:
        t0, c0 = time.perf_counter(), time.process_time()
        # Its own seed, not the paired tracked trial's: neither reuses the other's compiled graph.
        result = fit(spec.config_for(values, seed=trial_seed(spec.seed + 1, number), name=f"{spec.name}-plain-{number}"), prepared)
        keras.backend.clear_session(free_memory=number % GC_EVERY == GC_EVERY - 1)  # what the objective does
        return {"s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "val_accuracy": result.metrics["val_accuracy"]}

    def tracked(number: int) -> dict:
        t0, c0 = time.perf_counter(), time.process_time()
        optimize_to_budget(study, objective, budget=budget, n_trials=1, max_failures=0, callbacks=callbacks)
        returned = time.perf_counter()
        errors = uploader.flush()
        trial = study.trials[-1]
        assert trial.number == number and trial.state == optuna.trial.TrialState.COMPLETE and not errors, (trial, errors)
        return {"s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "critical_s": returned - t0,
                "val_accuracy": trial.value}

    one_off["first_tracked_trial_s"] = tracked(0)["s"]  # first run of the experiment, first summary update
    pairs = []

    def save(complete: bool) -> dict:
        """Write the figures so far (after every pair: a run stopped early on a busy machine keeps its pairs)."""
        result = {"epochs": args.epochs, "limit": args.limit, "complete": complete, **summarise(pairs), "pairs": pairs,
                  "one_off_s": one_off, "study_report_s": one_off.get("study_report_s"), "load_average_before": load_before,
                  "load_average_after": os.getloadavg(), "cpus": os.cpu_count()}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
        return result

    for k in range(args.pairs):
        number = k + 1
        if k % 4 in (0, 3):
            p, t = plain(number), tracked(number)
        else:
            t, p = tracked(number), plain(number)
        pairs.append({"trial": number, "plain_first": k % 4 in (0, 3), "plain_s": p["s"], "tracked_s": t["s"],
                      "overhead_ms": 1000 * (t["s"] - p["s"]), "critical_path_ms": 1000 * (t["critical_s"] - p["s"]),
                      "writes_wait_ms": 1000 * (t["s"] - t["critical_s"]), "plain_cpu_s": p["cpu_s"],
                      "tracked_cpu_s": t["cpu_s"], "cpu_overhead_ms": 1000 * (t["cpu_s"] - p["cpu_s"]),
                      "plain_val_accuracy": p["val_accuracy"], "tracked_val_accuracy": t["val_accuracy"],
                      "load_average": os.getloadavg()[0]})
        print(f"pair {number:3d}: plain {p['s']:.2f} s  tracked {t['s']:.2f} s  overhead {pairs[-1]['overhead_ms']:6.0f} ms"
              f"  (CPU {pairs[-1]['cpu_overhead_ms']:6.0f} ms)  load {pairs[-1]['load_average']:.2f}", flush=True)
        save(complete=False)
    timed("study_finish_s", lambda: summary.finish(report=None))
    timed("study_report_s", lambda: report_study(study, mlflow_client=client, out=tmp / "report.html", png=False))
    result = save(complete=True)
    overhead, ci, train = result["median_overhead_ms"], result["overhead_ci95_ms"], result["median_plain_trial_s"]
    cpu, cpu_ci, cpu_train = result["median_cpu_overhead_ms"], result["cpu_overhead_ci95_ms"], result["median_plain_trial_cpu_s"]
    print(f"median overhead {overhead:.0f} ms per trial (95% interval {ci[0]:.0f} to {ci[1]:.0f} ms) = "
          f"{100 * result['overhead_share']:.2f}% ({100 * result['overhead_share_ci95'][0]:.2f} to "
          f"{100 * result['overhead_share_ci95'][1]:.2f}%) of a {train:.2f} s trial ({len(pairs)} pairs, {args.epochs} epochs, "
          f"dense default, SQLite storage + SQLite MLflow); of it before the trial returns "
          f"{result['median_critical_path_ms']:.0f} ms, waiting for its writes {result['median_writes_wait_ms']:.0f} ms")
    print(f"CPU time (all threads) {cpu:.0f} ms ({cpu_ci[0]:.0f} to {cpu_ci[1]:.0f}) = {100 * result['cpu_overhead_share']:.2f}% "
          f"of {cpu_train:.2f} s")
    print("once: " + ", ".join(f"{k} {v:.2f}" for k, v in one_off.items()))
    print(f"load average {' '.join(f'{v:.2f}' for v in load_before)} before, "
          f"{' '.join(f'{v:.2f}' for v in result['load_average_after'])} after ({os.cpu_count()} CPUs)")
    return result


if __name__ == "__main__":
    main()
