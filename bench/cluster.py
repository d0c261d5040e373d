"""Cluster mode: trials per minute with 1 and 2 workers on PostgreSQL, and storage overhead per trial.

    CICY_BENCH_POSTGRES_URL=postgresql://USER:PASSWORD@HOST:PORT/DB .venv/bin/python -m bench.cluster

(``CICY_TEST_POSTGRES_URL`` works too; the role needs CREATEDB: every measurement gets a fresh database.)

1. Throughput: a tiny-model study (dense network, 400 matrices, 2 epochs) run by N worker processes
   against PostgreSQL, every trial logged to an ``mlflow server`` (PostgreSQL backend) on a loopback
   port, as on a cluster. The machine's cores are split between the workers (``--threads``).
   Trials per minute counts from the first trial's start to the last one's end, so the workers'
   start-up (importing TensorFlow) is not in it; the wall time including it is reported too.
2. Storage overhead: the same budget loop the workers run (``budget.optimize_to_budget``: stale-trial
   check, counting, ask, the user attributes a real trial writes, tell) around an objective
   that does no work, on SQLite, PostgreSQL, a journal file and (as the floor) Optuna's in-memory storage.

Results go to ``bench/results/cluster.json``. On a shared machine timings are noisy; compare the ratios
measured in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import optuna
import yaml

from bench.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
STUDY = {
    "seed": 0,
    "base": "dense",
    "data": {"limit": 400},
    "train": {"epochs": 2},
    "space": {
        "model.depth": {"type": "int", "low": 1, "high": 3},
        "model.width": {"type": "int", "low": 8, "high": 64, "log": True},
        "train.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    },
    "sampler": {"name": "random"},
}


def postgres_url() -> str:
    url = os.environ.get("CICY_BENCH_POSTGRES_URL") or os.environ.get("CICY_TEST_POSTGRES_URL")
    if not url:
        sys.exit("set CICY_BENCH_POSTGRES_URL=postgresql://USER:PASSWORD@HOST:PORT/DB (a role with CREATEDB)")
    return url


class Databases:
    def __init__(self, url: str):
        import psycopg2

        self.url, self.names = url, []
        self.conn = psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"))
        self.conn.autocommit = True

    def new(self, prefix: str) -> str:
        name = f"{prefix}_{secrets.token_hex(4)}"
        with self.conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return f"{self.url.rpartition('/')[0]}/{name}"

    def close(self) -> None:
        with self.conn.cursor() as cur:
            for name in self.names:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.conn.close()


#: The mlflow server's database pool, per server worker (``docker/compose.yaml`` and ``deploy/kubernetes/mlflow.yaml``
#: set the same). MLflow 3.17's ``log_batch`` holds one connection while it opens another, and a server worker runs up
#: to 40 requests at once (the ASGI bridge's threads), so with the default pool (5 + 10) 32 concurrent ``log_batch``
#: requests to one worker took every connection and waited for a second one: 30 s stalls and "QueuePool limit ...
#: reached" errors (34 of 160 requests). 2 x 40 connections at most: none. Overflow connections close when returned.
SERVER_POOL = {"MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "5", "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "75"}


def start_mlflow(backend: str, folder: Path, workers: int = 1) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend, "--artifacts-destination",
           str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=open(folder / "mlflow.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **SERVER_POOL})  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(uri + "/health", timeout=2)
            return proc, uri
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError(f"mlflow server did not start: {(folder / 'mlflow.log').read_text()[-2000:]}")


def throughput(dbs: Databases, tracking_uri: str, workers: int, trials: int, folder: Path) -> dict:
    from cicy_search.search import study as studies
    from cicy_search.search.storage import with_driver
    from cicy_search.search.studyfile import load

    name = f"bench_{workers}w_{secrets.token_hex(2)}"
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"study": name, **STUDY, "budget": {"n_trials": trials}}))
    storage = dbs.new("bench_optuna")
    studies.create(load(path), storage=storage, tracking_uri=tracking_uri)
    threads = max(1, (os.cpu_count() or 2) // workers)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CICY_SEARCH_HOME": str(folder / "home")}
    cmd = [sys.executable, "-m", "cicy_search.cli", "worker", str(path), "--storage", storage, "--threads", str(threads)]
    start = time.monotonic()
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env) for _ in range(workers)]
    codes = [p.wait(3600) for p in procs]
    wall = time.monotonic() - start
    if any(codes):
        raise RuntimeError(f"workers exited with {codes}")
    study = optuna.load_study(study_name=name, storage=optuna.storages.RDBStorage(with_driver(storage)))
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    per_trial = sorted(t.duration.total_seconds() for t in done)
    return {
        "workers": workers,
        "threads_per_worker": threads,
        "complete_trials": len(done),
        "all_trials": len(study.trials),
        "span_s": round(span, 1),
        "wall_s_with_startup": round(wall, 1),
        "trials_per_min": round(len(done) / span * 60, 2),
        "median_trial_s": round(per_trial[len(per_trial) // 2], 2),
    }


def overhead(url: str | None, label: str, trials: int) -> dict:
    """Milliseconds per trial of the workers' budget loop around an objective that does nothing."""
    from cicy_search.search.budget import Share, optimize_to_budget
    from cicy_search.search.storage import open_storage

    storage = optuna.storages.InMemoryStorage() if url is None else open_storage(url)
    study = optuna.create_study(study_name=f"overhead_{label}", storage=storage)
    config = {"data": {"limit": 400}, "model": {"depth": 2, "width": [32, 32]}, "train": {"epochs": 2}}

    def objective(trial):
        x = trial.suggest_int("model.depth", 1, 3)
        trial.suggest_int("model.width", 8, 64, log=True)
        trial.suggest_float("train.learning_rate", 1e-3, 1e-2, log=True)
        trial.set_user_attr("seed", trial.number)
        trial.set_user_attr("config", config)
        trial.set_user_attr("mlflow_run_id", secrets.token_hex(16))
        return float(x)

    times = []
    for _ in range(trials):
        t0 = time.perf_counter()
        optimize_to_budget(Share(study, budget=len(times) + 1, worker_id="bench:1"), objective)
        times.append((time.perf_counter() - t0) * 1000)
    tail = times[len(times) // 2 :]
    return {
        "storage": label,
        "trials": trials,
        "ms_per_trial_mean": round(sum(times) / len(times), 2),
        "ms_per_trial_median": round(sorted(times)[len(times) // 2], 2),
        "ms_per_trial_second_half": round(sum(tail) / len(tail), 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16, help="budget of the throughput study (per worker count)")
    parser.add_argument("--overhead-trials", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the worker counts, alternating order (1,2 then 2,1)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cluster.json")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from cicy_search.search.storage import with_driver

    dbs = Databases(postgres_url())
    results: dict = {"cpu_count": os.cpu_count(), "load_before": os.getloadavg()}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            results["overhead"] = [
                overhead(f"sqlite:///{folder / 'o.db'}", "sqlite", args.overhead_trials),
                overhead(dbs.new("bench_overhead"), "postgresql", args.overhead_trials),
                overhead(f"journal:{folder / 'o.log'}", "journal", args.overhead_trials),
                overhead(None, "in-memory", args.overhead_trials),
            ]
            for row in results["overhead"]:
                print(f"overhead {row['storage']:>10}: {row['ms_per_trial_mean']:.1f} ms/trial (median {row['ms_per_trial_median']:.1f})", flush=True)
            server, tracking_uri = start_mlflow(with_driver(dbs.new("bench_mlflow")), folder)
            try:
                results["throughput"] = []
                order = [n for r in range(args.rounds) for n in (args.workers if r % 2 == 0 else args.workers[::-1])]
                for n in order:
                    row = throughput(dbs, tracking_uri, n, args.trials, folder)
                    results["throughput"].append(row)
                    print(f"{n} worker(s) x {row['threads_per_worker']} threads: {row['trials_per_min']:.2f} trials/min "
                          f"({row['complete_trials']} trials in {row['span_s']:.0f} s; {row['wall_s_with_startup']:.0f} s with start-up)", flush=True)  # fmt: skip
            finally:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(30)
    finally:
        dbs.close()
    # Other load on a shared machine comes and goes: alternate the order and compare the mean rates.
    rates: dict[int, list[float]] = {}
    for r in results["throughput"]:
        rates.setdefault(r["workers"], []).append(r["trials_per_min"])
    results["mean_trials_per_min"] = {n: round(sum(v) / len(v), 2) for n, v in rates.items()}
    if 1 in rates and 2 in rates:
        results["scaling_2_over_1"] = round(results["mean_trials_per_min"][2] / results["mean_trials_per_min"][1], 2)
        print(f"mean trials/min {results['mean_trials_per_min']}; scaling, 2 workers over 1: {results['scaling_2_over_1']:.2f}x")
    results["load_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
