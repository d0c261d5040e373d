"""Tracking overhead: what MLflow tracking, and Optuna's own bookkeeping, add to a trial, measured in one run.

    .venv/bin/python -m bench.tracking [--epochs 20] [--rounds 12] [--block 4] [--server]

Trials of the default dense network (full 80/10/10 split of the original list; 20 epochs: the quickstart's kind
of trial) run in one process, in rounds of three arms, each arm a block of ``--block`` trials
one after the other, as a study runs them:

- ``plain``: the bare training (``training.fit`` with the Keras reset and garbage collection of the objective);
- ``search``: trials of an untracked study (the study's objective with its ``train`` fitting the config and
  recording nothing in MLflow, ``untracked``: sampling, user attributes, the pruning callback, Optuna's ask and
  tell in SQLite storage through ``optimize_to_budget``);
- ``tracked``: trials through the path ``study run`` takes (the same, plus the MLflow run: creation,
  params, dataset inputs, per-epoch metrics, tags, artifacts, the model for a best-so-far trial, the parent
  run's summary; SQLite MLflow store, or with ``--server`` an ``mlflow server`` on one, started by the bench: the
  cluster's setup, whose CPU per trial is measured apart). Within a block each trial's last writes (its run's
  end, the model of a best-so-far trial) overlap the next trial's training, as in a study; the study's summary is
  written as a study writes it (at once after a block's first trial, then at most every
  ``tracking.FLUSH_SECONDS``), and once more at the block's end. The block counts until the background uploader
  has written all of it (``Uploader.flush``): no write is left to overlap the next arm. ``--block 1`` waits for
  every trial's writes.

The tracking overhead is tracked - search (what MLflow adds); Optuna's bookkeeping is search - plain; both
together tracked - plain; each a block's difference divided by its trials. The order of the arms runs through all
six permutations in turn, so slow drift cancels; each trial has its own seed, and every arm runs warm: preparing
the data, the first training (graph tracing), creating the studies, their first trials, the end of the study (the
last flush, the parent run's end) and the study report are timed once each, apart. Each figure is the median of
the per-round differences with a bootstrap 95 % interval, in ms and as a share of the median plain trial, in wall
time and in CPU time of the process (all threads, the uploader's too); the load average is recorded before, after
and at every round.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import time
import warnings
from contextlib import ExitStack, contextmanager
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BOOTSTRAP = 10_000


def interval(values: list[float], seed: int = 0) -> list[float]:
    """Bootstrap 95 % interval of the median of ``values`` (percentiles of resampled medians)."""
    import numpy as np

    x = np.asarray(values, dtype=float)
    medians = np.median(np.random.default_rng(seed).choice(x, size=(BOOTSTRAP, len(x))), axis=1)
    return [float(v) for v in np.percentile(medians, [2.5, 97.5])]


ARMS = ("plain", "search", "tracked")
# Two Latin squares: over every three rounds from the first (and over all six) each arm runs in each position equally.
ORDERS = ((0, 1, 2), (1, 2, 0), (2, 0, 1), (0, 2, 1), (2, 1, 0), (1, 0, 2))
DIFFERENCES = {"tracking": ("tracked", "search"), "search": ("search", "plain"), "overhead": ("tracked", "plain")}


def summarise(rounds: list[dict]) -> dict:
    """Medians over ``rounds`` of the paired differences (bootstrap 95 % intervals), as shares of the plain trial."""

    def column(key):
        return [r[key] for r in rounds]

    train, cpu_train = statistics.median(column("plain_s")), statistics.median(column("plain_cpu_s"))
    out = {"n_rounds": len(rounds), "median_plain_trial_s": train, "median_plain_trial_cpu_s": cpu_train}
    for name in DIFFERENCES:
        for unit, base in (("", train), ("cpu_", cpu_train)):
            values = column(f"{unit}{name}_ms")
            median, ci = statistics.median(values), interval(values)
            out[f"median_{unit}{name}_ms"], out[f"{unit}{name}_ci95_ms"] = median, ci
            out[f"{unit}{name}_share"], out[f"{unit}{name}_share_ci95"] = median / 1000 / base, [v / 1000 / base for v in ci]
    for key in ("direct_tracking_ms", "direct_search_ms", "uploader_cpu_ms", "uploader_cpu_during_ms", "server_cpu_ms",
                *(f"{a}_outside_fit_ms" for a in ARMS)):
        out[f"median_{key}"] = statistics.median(column(key))
    out["direct_tracking_ci95_ms"], out["direct_search_ci95_ms"] = interval(column("direct_tracking_ms")), interval(column("direct_search_ms"))
    out["direct_tracking_share"] = out["median_direct_tracking_ms"] / 1000 / train
    out["direct_search_share"] = out["median_direct_search_ms"] / 1000 / train
    out["median_critical_path_ms"] = statistics.median(column("critical_path_ms"))
    out["median_writes_wait_ms"] = statistics.median(column("writes_wait_ms"))
    return out


def untracked(spec):
    """``objective.Objective`` whose ``train`` fits the config (``training.fit``, timed by ``fit_timer``) and records
    nothing in MLflow, with the Keras reset the real one does: the search arm."""
    import keras

    from cicy_search import training
    from cicy_search.search.objective import GC_EVERY, Objective
    from cicy_search.tracking.runner import TrackedResult

    class Untracked(Objective):
        def train(self, config: dict, *, number: int, tags: dict, callbacks=(), log_model=True, on_start=None, **fit_options):
            try:
                return TrackedResult(training.fit(config, self.prepared(config), callbacks=[*self.callbacks, *callbacks], **fit_options), None)
            finally:
                keras.backend.clear_session(free_memory=number % GC_EVERY == GC_EVERY - 1)

    return Untracked(spec, mlflow_client=None, parent_run_id=None)


@contextmanager
def fit_timer():
    """While inside, ``training.fit`` (the runner's and the untracked objective's) adds its time to ``fitting["s"]``,
    so that what surrounds training in a trial can be timed apart, and the CPU of the uploader's writes done
    meanwhile to ``fitting["uploader_cpu_s"]``; put back on the way out. Yields ``(timed_fit, fitting)``."""
    from cicy_search import tracking, training
    from cicy_search.tracking import runner

    fit, fitting, uploader = training.fit, {"s": 0.0, "uploader_cpu_s": 0.0}, tracking.uploader()

    def timed_fit(*a, **k):
        t0, cpu0 = time.perf_counter(), uploader.cpu_seconds
        try:
            return fit(*a, **k)
        finally:
            fitting["s"] += time.perf_counter() - t0
            fitting["uploader_cpu_s"] += uploader.cpu_seconds - cpu0

    training.fit = runner.fit = timed_fit
    try:
        yield timed_fit, fitting
    finally:
        training.fit = runner.fit = fit


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20, help="epochs per training (the dense default is 20)")
    parser.add_argument("--rounds", type=int, default=12, help="rounds measured (one block of each arm per round)")
    parser.add_argument("--block", type=int, default=4, help="trials one after the other in each arm of a round")
    parser.add_argument("--limit", type=int, default=None, help="use only this many matrices of the list (tests)")
    parser.add_argument("--dir", type=Path, default=None, help="folder for the Optuna and MLflow stores (default: a new temporary one)")
    parser.add_argument("--server", action="store_true", help="track through an mlflow server (SQLite backend) started here")
    parser.add_argument("--out", default=None, help="default: bench/results/tracking.json (tracking-server.json with --server)")
    args = parser.parse_args(argv)
    args.out = args.out or f"bench/results/tracking{'-server' if args.server else ''}.json"
    args.dir = args.dir or Path(tempfile.mkdtemp(prefix="bench-tracking-"))
    with fit_timer() as (timed_fit, fitting), ExitStack() as stack:
        tracking_uri, meter = f"sqlite:///{args.dir / 'mlflow.db'}", None
        if args.server:
            from bench.cluster import start_mlflow
            from bench.processes import CpuMeter, stop_process_group

            server, tracking_uri = start_mlflow(f"sqlite:///{args.dir / 'server.db'}", args.dir, workers=1)
            stack.callback(stop_process_group, server, signal.SIGTERM, 30)
            meter = CpuMeter({"mlflow_server": [server.pid]})
        return measure(args, timed_fit, fitting, tracking_uri, meter)


def measure(args, timed_fit, fitting: dict, tracking_uri: str, meter=None) -> dict:
    """The rounds ``main`` describes, with ``fit_timer``'s timed fit in place; ``meter`` (a ``CpuMeter``) counts
    the tracking server's CPU during each tracked trial."""
    import keras
    import optuna

    from cicy_search import tracking
    from cicy_search.search import study as studies
    from cicy_search.search import studyfile
    from cicy_search.search.budget import Share, optimize_to_budget
    from cicy_search.search.objective import GC_EVERY, Objective, trial_seed
    from cicy_search.tracking import links
    from cicy_search.reporting.study import report_study
    from cicy_search.tracking.summary import StudySummary
    from cicy_search.training import fit

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tmp = args.dir
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
    storage = f"sqlite:///{tmp / 'optuna.db'}"
    budget = args.rounds * args.block + 1
    one_off = {}

    def timed(name, fn):
        t0 = time.perf_counter()
        out = fn()
        one_off[name] = time.perf_counter() - t0
        return out

    load_before = os.getloadavg()
    study = timed("study_create_s", lambda: studies.create(spec, storage=storage, tracking_uri=tracking_uri, n_trials=budget))
    # The untracked study: the same sampler, pruner and storage file, no MLflow run anywhere.
    search = optuna.create_study(study_name="bench-search", storage=studies.open_storage(storage), sampler=spec.sampler_object(),
                                 pruner=spec.pruner_object(), directions=spec.directions)
    # What studies.run and drive set up once per study call; the objective prepares the data once for all trials.
    client, uploader = links.client(study, tracking_uri), tracking.uploader()
    objective = Objective(spec, mlflow_client=client, parent_run_id=links.parent_run_id(study), uploader=uploader)
    search_objective = untracked(spec)
    config = spec.config_for(values, seed=0)
    prepared = timed("prepare_s", lambda: objective.prepared(config))
    search_objective.prepared(config)
    timed("first_fit_s", lambda: (fit(config, prepared), keras.backend.clear_session()))
    for s in (study, search):
        studies.reseed(s, spec)
    summary = StudySummary(study, client, budget=budget, uploader=uploader)
    summary.start()
    reporter = studies.reporter(None, spec, budget)

    def measured(fn) -> dict:
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn() or {}
        return {"s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, **out}

    def plain(numbers: range) -> dict:
        fitting["s"], t0, accuracy = 0.0, time.perf_counter(), []
        for number in numbers:
            # Its own seed, not the other arms': none reuses another's compiled graph.
            config = spec.config_for(values, seed=trial_seed(spec.seed + 1, number), name=f"{spec.name}-plain-{number}")
            accuracy.append(timed_fit(config, prepared).metrics["val_accuracy"])
            keras.backend.clear_session(free_memory=number % GC_EVERY == GC_EVERY - 1)  # what the objective does
        return {"val_accuracy": statistics.mean(accuracy), "outside_fit_s": time.perf_counter() - t0 - fitting["s"]}

    def trials(s: optuna.Study, fn, callbacks, numbers: range) -> dict:
        server0 = meter.read() if meter else None
        fitting["s"], fitting["uploader_cpu_s"], cpu0, t0 = 0.0, 0.0, uploader.cpu_seconds, time.perf_counter()
        optimize_to_budget(Share(s, budget=budget, n_trials=len(numbers), max_failures=0), fn, callbacks=callbacks)
        returned = time.perf_counter()
        if s is study:
            summary.flush()  # a study would write the trials waiting for their period later: in another arm here
        errors = uploader.flush()
        server_cpu = meter.since(server0)["mlflow_server"] if meter else 0.0
        done = s.trials[-len(numbers):]
        assert [t.number for t in done] == list(numbers) and not errors, (done, errors)
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in done), done
        return {"returned": returned, "val_accuracy": statistics.mean(t.value for t in done), "outside_fit_s": time.perf_counter() - t0 - fitting["s"],
                "uploader_cpu_during_s": fitting["uploader_cpu_s"], "uploader_cpu_s": uploader.cpu_seconds - cpu0, "server_cpu_s": server_cpu}

    arms = {
        "plain": plain,
        "search": lambda numbers: trials(search, search_objective, [reporter], numbers),
        "tracked": lambda numbers: trials(study, objective, [reporter, summary.after_trial], numbers),
    }
    one_off["first_search_trial_s"] = measured(lambda: arms["search"](range(1)))["s"]
    one_off["first_tracked_trial_s"] = measured(lambda: arms["tracked"](range(1)))["s"]
    rounds = []

    def save(complete: bool) -> dict:
        """Write the figures so far (after every round: a run stopped early on a busy machine keeps its rounds)."""
        result = {"epochs": args.epochs, "limit": args.limit, "block": args.block, "tracking": "mlflow server (SQLite backend)" if meter else "SQLite store",
                  "complete": complete, **summarise(rounds), "rounds": rounds,
                  "one_off_s": one_off, "study_report_s": one_off.get("study_report_s"), "load_average_before": load_before,
                  "load_average_after": os.getloadavg(), "cpus": os.cpu_count()}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
        return result

    for k in range(args.rounds):
        numbers, order = range(1 + k * args.block, 1 + (k + 1) * args.block), [ARMS[i] for i in ORDERS[k % len(ORDERS)]]
        t0 = {}
        got = {}
        for arm in order:
            t0[arm] = time.perf_counter()
            got[arm] = measured(lambda: arms[arm](numbers))
        per = 1 / args.block  # every figure below is a trial's: the block's divided by its trials
        row = {"round": k + 1, "trials": [numbers.start, numbers.stop - 1], "order": order, "load_average": os.getloadavg()[0]}
        for arm in ARMS:
            row.update({f"{arm}_s": per * got[arm]["s"], f"{arm}_cpu_s": per * got[arm]["cpu_s"], f"{arm}_val_accuracy": got[arm]["val_accuracy"]})
        for name, (a, b) in DIFFERENCES.items():
            row[f"{name}_ms"] = 1000 * (row[f"{a}_s"] - row[f"{b}_s"])
            row[f"cpu_{name}_ms"] = 1000 * (row[f"{a}_cpu_s"] - row[f"{b}_cpu_s"])
        # Direct, low-noise: the time around training on the trials' thread, and the uploader's CPU while they trained.
        for arm in ARMS:
            row[f"{arm}_outside_fit_ms"] = 1000 * per * got[arm]["outside_fit_s"]
        row["uploader_cpu_ms"] = 1000 * per * got["tracked"]["uploader_cpu_s"]
        row["uploader_cpu_during_ms"] = 1000 * per * got["tracked"]["uploader_cpu_during_s"]
        row["server_cpu_ms"] = 1000 * per * got["tracked"]["server_cpu_s"]  # 0 without --server
        row["direct_tracking_ms"] = row["tracked_outside_fit_ms"] - row["search_outside_fit_ms"] + row["uploader_cpu_during_ms"]
        row["direct_search_ms"] = row["search_outside_fit_ms"] - row["plain_outside_fit_ms"]
        row["critical_path_ms"] = 1000 * per * (got["tracked"]["returned"] - t0["tracked"] - got["search"]["s"])
        row["writes_wait_ms"] = 1000 * per * (got["tracked"]["s"] - (got["tracked"]["returned"] - t0["tracked"]))
        rounds.append(row)
        print(f"round {k + 1:3d}, a trial: plain {row['plain_s']:.2f} s  search {row['search_s']:.2f} s  tracked {row['tracked_s']:.2f} s"
              f"  tracking {row['tracking_ms']:6.0f} ms  search {row['search_ms']:6.0f} ms  load {row['load_average']:.2f}", flush=True)
        save(complete=False)
    timed("study_finish_s", lambda: summary.finish(report=None))
    timed("study_report_s", lambda: report_study(study, mlflow_client=client, out=tmp / "report.html", png=False))
    result = save(complete=True)
    train, cpu_train = result["median_plain_trial_s"], result["median_plain_trial_cpu_s"]
    what = {"tracking": "MLflow tracking (tracked - search)", "search": "Optuna's bookkeeping (search - plain)",
            "overhead": "both (tracked - plain)"}
    print(f"{len(rounds)} rounds of {args.block} trials an arm, {args.epochs} epochs, dense default, SQLite Optuna storage + {result['tracking']}; "
          f"median plain trial {train:.2f} s ({cpu_train:.2f} s CPU)")
    for name, label in what.items():
        ci, cpu_ci = result[f"{name}_ci95_ms"], result[f"cpu_{name}_ci95_ms"]
        print(f"{label}: {result[f'median_{name}_ms']:.0f} ms ({ci[0]:.0f} to {ci[1]:.0f}) = {100 * result[f'{name}_share']:.2f}% "
              f"({100 * result[f'{name}_share_ci95'][0]:.2f} to {100 * result[f'{name}_share_ci95'][1]:.2f}%) of wall time; "
              f"CPU {result[f'median_cpu_{name}_ms']:.0f} ms ({cpu_ci[0]:.0f} to {cpu_ci[1]:.0f}) = {100 * result[f'cpu_{name}_share']:.2f}%")
    d, ds = result["direct_tracking_ci95_ms"], result["direct_search_ci95_ms"]
    print(f"direct: MLflow tracking {result['median_direct_tracking_ms']:.0f} ms ({d[0]:.0f} to {d[1]:.0f}) = "
          f"{100 * result['direct_tracking_share']:.2f}% (on the trial's thread {result['median_tracked_outside_fit_ms'] - result['median_search_outside_fit_ms']:.0f} ms "
          f"+ uploader CPU while it trained {result['median_uploader_cpu_during_ms']:.0f} ms; uploader CPU in all {result['median_uploader_cpu_ms']:.0f} ms); "
          f"Optuna's {result['median_direct_search_ms']:.0f} ms ({ds[0]:.0f} to {ds[1]:.0f}) = {100 * result['direct_search_share']:.2f}%")
    print(f"of the tracking: {result['median_critical_path_ms']:.0f} ms until the tracked trial returns, "
          f"{result['median_writes_wait_ms']:.0f} ms waiting for its writes")
    if meter:
        print(f"the mlflow server's CPU per tracked trial: {result['median_server_cpu_ms']:.0f} ms (median; not in the figures above)")
    print("once: " + ", ".join(f"{k} {v:.2f}" for k, v in one_off.items()))
    print(f"load average {' '.join(f'{v:.2f}' for v in load_before)} before, "
          f"{' '.join(f'{v:.2f}' for v in result['load_average_after'])} after ({os.cpu_count()} CPUs)")
    return result


if __name__ == "__main__":
    main()
