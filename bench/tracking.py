"""Tracking overhead: what Optuna + MLflow bookkeeping adds to a trial, against the same training untracked.

    .venv/bin/python -m bench.tracking [--epochs 20] [--repeats 3] [--trials 10]

Each repeat trains the default dense network (full 80/10/10 split of the original list; 20 epochs, about
3.4 s: the quickstart's kind of trial) in two blocks of ``--trials`` trainings in this process: plain
``training.fit`` calls (with the same Keras reset and garbage collection as the study's objective), then one
study call running as many trials (SQLite Optuna storage, SQLite MLflow store: run creation, params,
dataset inputs, per-epoch metrics, tags, artifacts, the model for a best-so-far trial, the parent run's
summary after each trial, and the wait at the end until every queued MLflow write is done). The overhead
is the per-trial wall-time difference, in ms and as a share of the plain trial; the median over repeats is
the figure. Both blocks run in the same process, in turns (plain first in even repeats, tracked first in
odd ones), so background load affects both; the load average is recorded before and after, and the CPU
time of the process (all its threads, the uploader's too) is measured beside the wall time: on a shared
machine it varies less. The study report that ``study run`` logs once at its end is timed separately (once
per run, not per trial).
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
    parser.add_argument("--trials", type=int, default=10, help="trials per block: one study call runs them all")
    parser.add_argument("--out", default="bench/results/tracking.json")
    args = parser.parse_args()

    import keras
    import optuna

    from cicy_search.search import study as studies
    from cicy_search.search import studyfile
    from cicy_search import tracking
    from cicy_search.search.objective import GC_EVERY, trial_seed
    from cicy_search.reporting.study import report_study
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
    values = {"train.learning_rate": 1e-3}
    config = spec.config_for(values, seed=0)
    prepared = prepare(config)
    fit(config, prepared)  # warm-up: graph tracing, data caches
    keras.backend.clear_session()
    storage, tracking_uri = f"sqlite:///{tmp / 'optuna.db'}", f"sqlite:///{tmp / 'mlflow.db'}"
    studies.create(spec, storage=storage, tracking_uri=tracking_uri)  # one-off: schema creation is not per trial

    rows = []
    load_before = os.getloadavg()
    for r in range(args.repeats):

        def plain_block():
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(r * args.trials, (r + 1) * args.trials):
                # Trial i's own config (its seed): XLA reuses a compiled epoch only for an identical graph.
                result = fit(spec.config_for(values, seed=trial_seed(spec.seed, i), name=f"{spec.name}-{i}"), prepared)
                # What the objective does after each trial: reset Keras, a full collection every GC_EVERY trials.
                keras.backend.clear_session(free_memory=i % GC_EVERY == GC_EVERY - 1)
            return result, (time.perf_counter() - t0) / args.trials, (time.process_time() - c0) / args.trials

        def tracked_block():
            t0, c0 = time.perf_counter(), time.process_time()
            result = studies.run(spec, storage=storage, tracking_uri=tracking_uri, n_trials=(r + 1) * args.trials, report=False)
            return result, (time.perf_counter() - t0) / args.trials, (time.process_time() - c0) / args.trials

        if r % 2 == 0:
            plain, plain_s, plain_cpu = plain_block()
            summary, tracked_s, tracked_cpu = tracked_block()
        else:
            summary, tracked_s, tracked_cpu = tracked_block()
            plain, plain_s, plain_cpu = plain_block()
        rows.append({"plain_s": plain_s, "tracked_s": tracked_s, "overhead_ms": 1000 * (tracked_s - plain_s),
                     "plain_cpu_s": plain_cpu, "tracked_cpu_s": tracked_cpu, "cpu_overhead_ms": 1000 * (tracked_cpu - plain_cpu),
                     "train_s": plain.seconds, "val_accuracy": summary.study.trials[-1].value})
    t0 = time.perf_counter()
    report_study(summary.study, mlflow_client=tracking.client(tracking_uri), out=tmp / "report.html", png=False)
    report_s = time.perf_counter() - t0
    overhead = statistics.median(r["overhead_ms"] for r in rows)
    train = statistics.median(r["plain_s"] for r in rows)
    cpu = statistics.median(r["cpu_overhead_ms"] for r in rows)
    cpu_train = statistics.median(r["plain_cpu_s"] for r in rows)
    result = {"epochs": args.epochs, "trials_per_block": args.trials, "repeats": rows, "median_overhead_ms": overhead,
              "median_plain_trial_s": train, "overhead_share": overhead / 1000 / train,
              "median_cpu_overhead_ms": cpu, "median_plain_trial_cpu_s": cpu_train, "cpu_overhead_share": cpu / 1000 / cpu_train,
              "study_report_s": report_s, "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "cpus": os.cpu_count()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    for r in rows:
        print(f"per trial: plain {r['plain_s']:.2f} s  tracked {r['tracked_s']:.2f} s  overhead {r['overhead_ms']:.0f} ms"
              f"  (CPU time, all threads: {r['plain_cpu_s']:.2f} s, {r['tracked_cpu_s']:.2f} s, {r['cpu_overhead_ms']:.0f} ms)")
    print(f"median overhead {overhead:.0f} ms per trial = {100 * result['overhead_share']:.1f}% of a {train:.2f} s trial "
          f"({args.epochs} epochs, dense default, SQLite storage + SQLite MLflow); CPU time {cpu:.0f} ms = "
          f"{100 * result['cpu_overhead_share']:.1f}%")
    print(f"study report at the end of a study run: {report_s:.1f} s once; load average "
          f"{' '.join(f'{v:.2f}' for v in load_before)} before, {' '.join(f'{v:.2f}' for v in result['load_average_after'])} after "
          f"({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
